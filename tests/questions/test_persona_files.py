"""Persona files: every format, line numbers in every refusal, stable ids for unsafe names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolebench_eval.errors import UsageError
from rolebench_eval.questions.persona_files import load_personas, safe_id

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "personas.txt"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_text_file_one_persona_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "A 30-year-old chef from Lyon\nA retired pilot, 71, who paints\n\n")
    loaded = load_personas(path)
    assert loaded.format == "txt" and loaded.column is None
    assert [(p.id, p.text, p.name, p.line) for p in loaded.personas] == [
        ("A 30-year-old chef from Lyon", "A 30-year-old chef from Lyon", None, 1),
        ("A retired pilot, 71, who paints", "A retired pilot, 71, who paints", None, 2),
    ]
    import hashlib

    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_list_of_objects_and_strings_with_their_lines(tmp_path: Path) -> None:
    data = '[\n  {"name": "Ada", "description": "A mathematician in 1840s London"},\n\n  "A sailor"\n]\n'
    loaded = load_personas(write(tmp_path, "p.json", data))
    assert [(p.id, p.text, p.name, p.line) for p in loaded.personas] == [
        ("Ada", "A mathematician in 1840s London", "Ada", 2),
        ("A sailor", "A sailor", None, 4),
    ]


def test_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = write(tmp_path, "p.jsonl", '{"name": "Bo", "description": "A beekeeper"}\n"A baker"\n')
    assert [(p.id, p.line) for p in load_personas(jsonl).personas] == [("Bo", 1), ("A baker", 2)]
    csv_path = write(tmp_path, "p.csv", 'name,bio\nCy,"A cyclist,\nwho races"\nDi,A diver\n')
    loaded = load_personas(csv_path, column="bio")
    assert loaded.column == "bio"
    # The quoted cell spans lines 2-3, so the next row starts on line 4.
    assert [(p.id, p.text, p.line) for p in loaded.personas] == [("Cy", "A cyclist,\nwho races", 2), ("Di", "A diver", 4)]
    default = write(tmp_path, "q.csv", "persona\nA potter\n")
    assert load_personas(default).personas[0].text == "A potter"


@pytest.mark.parametrize(
    ("name", "text", "column", "needle"),
    [
        ("p.txt", "A chef\n\nA pilot\n", None, "p.txt: empty persona at line(s) 2"),
        ("p.txt", "A chef\nA pilot\na  CHEF\n", None, "line 3 repeats the persona of line 1"),
        ("p.json", '[\n"A chef",\n"   "\n]', None, "p.json: empty persona at line(s) 3"),
        ("p.json", '[\n{"name": "X", "description": "one"},\n{"name": "X", "description": "two"}\n]', None,
         "line 3 has the same name as line 2"),
        ("p.json", '[\n"A chef",\n"A pilot"\n', None, "p.json, line 4: invalid JSON: expected ',' or ']'"),
        ("p.json", '{"a": 1}', None, "expected a JSON list of personas"),
        ("p.jsonl", '"A chef"\n{"title": "x"}\n', None, "p.jsonl, line 2: a persona object needs 'description'"),
        ("p.jsonl", '"A chef"\n[1]\n', None, "p.jsonl, line 2: expected a string or an object"),
        ("p.csv", "name,bio\nA,x\n", None, "p.csv, line 1: no 'persona' or 'description' column"),
        ("p.csv", "name,bio\nA,x\n", "nope", "--column nope: "),
        ("p.csv", "persona\nA chef\n\"\"\n", None, "p.csv: empty persona at line(s) 3"),
        ("p.yaml", "- a\n", None, "unknown format '.yaml'"),
        ("p.txt", "A chef\n", "bio", "--column applies to .csv persona files"),
    ],
)
def test_refusals_name_file_and_line(tmp_path: Path, name: str, text: str, column: str | None, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_personas(write(tmp_path, name, text), column)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_unsafe_names_become_stable_ids(tmp_path: Path) -> None:
    assert safe_id("A 27-year-old designer, LGBTQ+ advocate") == "A 27-year-old designer, LGBTQ+ advocate"
    unsafe = "../../etc/passwd"
    first = safe_id(unsafe)
    assert first == safe_id(unsafe) and "/" not in first and first.startswith("etc-passwd-") and len(first) == 21
    assert safe_id("question-set").startswith("question-set-")  # the manifest's own name
    assert safe_id(".hidden") != ".hidden" and safe_id("x" * 300) != "x" * 300
    data = [{"name": "Dr. Who?", "description": "A time traveller"}, {"name": "dr/who", "description": "Another"}]
    loaded = load_personas(write(tmp_path, "p.json", json.dumps(data)))
    ids = [p.id for p in loaded.personas]
    assert all("/" not in i and "?" not in i for i in ids) and len(set(ids)) == 2
    assert ids == [p.id for p in load_personas(write(tmp_path, "again.json", json.dumps(data))).personas]


def test_ids_differing_only_in_case_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="line 2 has the same name as line 1"):
        load_personas(write(tmp_path, "p.jsonl", '{"name": "Bob", "description": "a"}\n{"name": "bob", "description": "b"}\n'))


def test_the_shipped_example_file_loads() -> None:
    loaded = load_personas(EXAMPLE)
    assert 2 <= len(loaded.personas) <= 5
