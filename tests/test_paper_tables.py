"""Paper tables: published numbers rendered exactly as the papers print them, plus measured rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from rolebench_eval.analysis import paper_tables as pt
from rolebench_eval.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
TABLES = [
    "opencharacter_table3",
    "opencharacter_table5",
    "personagym_table1",
    "rolellm_en_instruction",
    "rolellm_en_role",
    "rolellm_zh_instruction",
    "rpbench_auto",
]


def measured(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "label": "rbe: OpenCharacter 8B",
        "size": "8B",
        "protocol": "opencharacter",
        "judge": "gpt-4o-2024-08-06",
        "values": {
            "EA": {"mean": 4.6812, "std": 0.5123, "n": 200},
            "PScore-L": {"mean": 4.655, "std": 0.2649, "n": 200},
        },
    }
    row.update(overrides)
    return row


def test_shipped_tables_and_both_copies_are_identical() -> None:
    # Tables are named in kebab-case; their files keep the old snake_case names (also aliases).
    assert pt.list_tables() == sorted(name.replace("_", "-") for name in TABLES)
    packaged = REPO / "rolebench_eval" / "reference_tables"
    human = REPO / "results" / "reference"
    assert sorted(p.name for p in packaged.glob("*.json")) == sorted(p.name for p in human.glob("*.json"))
    for path in human.glob("*.json"):
        assert (packaged / path.name).read_bytes() == path.read_bytes(), f"{path.name} differs between copies"
    assert (human / "README.md").is_file()


@pytest.mark.parametrize("name", TABLES)
def test_reference_files_are_complete(name: str) -> None:
    data = json.loads((REPO / "results" / "reference" / f"{name}.json").read_text(encoding="utf-8"))
    assert data["name"] == name
    # RPBench-Auto has no paper: its leaderboard is cited by its URL.
    assert data["citation"]["arxiv_id"] in {"2407.18416", "2501.15427", "2310.00746"} or data["citation"]["url"]
    assert data["citation"]["authors"] and data["citation"]["title"]
    columns = [c["id"] for c in data["columns"]]
    for row in data["rows"]:
        assert row["published"] is True
        assert list(row["values"]) == columns
        assert all(set(cell) == {"mean", "std"} for cell in row["values"].values())


def test_protocols_and_judges_follow_the_docs() -> None:
    table1 = pt.load_table("personagym_table1")
    assert (table1.protocol, table1.judges) == ("personagym", ("gpt-4o-2024-05-13", "Llama-3-70B-chat"))
    assert table1.citation.table == 1
    # Table 5 is the authors' full-benchmark protocol (judge batches of 5), Table 3 the Light one.
    for name, number, protocol in (("opencharacter_table3", 3, "opencharacter"), ("opencharacter_table5", 5, "opencharacter-full")):
        table = pt.load_table(name)
        assert (table.protocol, table.judges, table.citation.table) == (protocol, ("gpt-4o-2024-08-06",), number)
        assert table.examples_model == "gpt-4o-2024-08-06"
        assert table.flagged == {"unscored_policy": "reference-zero", "data.n_personas": 200}
    assert pt.load_table("opencharacter_table3").required == {"data.questions": "benchmark-v1_personagym-light"}
    assert pt.load_table("opencharacter_table5").required == {"data.questions": "benchmark-v1"}
    assert (table1.examples_model, table1.required) == ("gpt-4o-2024-05-13", {"data.questions": "benchmark-v1"})
    assert pt.load_table("rolellm_en_instruction").judges == ("gpt-3.5",)
    assert pt.load_table("rolellm_en_role").judges == ("gpt-3.5",)
    assert pt.load_table("rolellm_zh_instruction").judges == ("gpt-4",)
    assert [c.id for c in pt.load_table("opencharacter_table3").columns] == ["EA", "TC", "LH", "PC", "AJ", "PScore-L"]
    assert [c.id for c in table1.columns] == ["AJ", "EA", "LH", "PC", "TC", "PersonaScore"]


def test_opencharacter_table3_row_in_the_papers_format() -> None:
    text = pt.render_table("opencharacter_table3")
    assert (
        "| OpenCharacter | 8B | 4.70 (.53) | 4.92 (.50) | 4.32 (.60) | 4.54 (.56) | 4.85 (.38) | 4.66 (.27) | published† |"
        in text.splitlines()
    )
    assert "| gpt-3.5-turbo-1106 | - | 4.67 (.50) | 4.99 (.21) |" in text
    assert '† Published: Wang et al., "OpenCharacter: Training Customizable Role-Playing LLMs with Large-Scale Synthetic Personas", arXiv:2501.15427, Table 3.' in text


def test_opencharacter_table5_row() -> None:
    text = pt.render_table("opencharacter_table5")
    assert (
        "| OpenCharacter (8B Instruct) | 8B | 4.47 (.24) | 4.78 (.47) | 4.27 (.25) | 4.51 (.20) | 4.58 (.12) | 4.52 (.13) | published† |"
        in text.splitlines()
    )


def test_personagym_table1_keeps_the_leading_zero() -> None:
    lines = pt.render_table("personagym_table1").splitlines()
    assert "| model | AJ | EA | LH | PC | TC | PersonaScore | source |" in lines  # no size column
    assert "| GPT 3.5 | 4.31 (0.49) | 4.28 (0.49) | 3.63 (0.68) | 4.70 (0.41) | 4.96 (0.30) | 4.38 (0.23) | published† |" in lines
    assert "| LLaMA-2-13b | 3.96 (0.80) | 3.87 (0.84) | 3.77 (0.87) | 4.12 (0.92) | 4.18 (1.00) | 3.98 (0.49) | published† |" in lines
    haiku = next(row for row in pt.load_table("personagym_table1").rows if row.model == "Claude 3 Haiku")
    assert haiku.values["PC"] == pt.Cell(mean=3.47, std=1.57)  # the paper's value, not the repo's typo 4.47


def test_rolellm_rows() -> None:
    lines = pt.render_table("rolellm_en_instruction").splitlines()
    assert "| model | size | CUS | RAW | SPE | win rate | source |" in lines
    assert "| RoleLLaMA | 7B | 0.3294 | 0.3755 | 0.3814 | 55.82 | published† |" in lines
    assert "| RoleGPT | - | 0.5764 | 0.5322 | 0.3229 | - | published† |" in lines
    assert "| Alpaca | 7B | 0.2423 | 0.3529 | 0.2695 | 29.30 | published† |" in lines
    zh = pt.render_table("rolellm_zh_instruction").splitlines()
    assert "| RoleGLM | 6B | 0.5049 | 0.5255 | 0.3406 | 36.37 | published† |" in zh
    role = pt.render_table("rolellm_en_role").splitlines()
    assert "| RoleLLaMA | 7B | 0.4126 | 0.4107 | 0.2568 | 49.51 | published† |" in role


def test_number_formats() -> None:
    short = pt.Column(id="EA", label="EA", format="mean_std_short", unit="likert", judged=True)
    long = pt.Column(id="EA", label="EA", format="mean_std", unit="likert", judged=True)
    assert pt.format_cell(pt.Cell(4.655, 0.2649), short) == "4.66 (.26)"
    assert pt.format_cell(pt.Cell(4.0, 1.0234), short) == "4.00 (1.02)"  # only a leading 0 is dropped
    assert pt.format_cell(pt.Cell(3.96, 0.8), long) == "3.96 (0.80)"
    assert pt.format_cell(pt.Cell(None), long) == "-"
    assert pt.format_cell(pt.Cell(4.5), long) == "4.50"


def test_measured_rows_follow_a_separator() -> None:
    lines = pt.render_table("opencharacter_table3", [measured()]).splitlines()
    published_last = max(i for i, line in enumerate(lines) if line.endswith("published† |"))
    separator = lines.index("| *measured (this harness)* |  |  |  |  |  |  |  |  |")
    row = lines.index("| rbe: OpenCharacter 8B | 8B | 4.68 (.51) | - | - | - | - | 4.66 (.26) | measured |")
    assert published_last < separator < row


def test_mismatched_rows_are_refused_unless_allowed() -> None:
    with pytest.raises(UsageError, match="protocol 'personagym' \\(table: 'opencharacter'\\).*allow_mismatch=True"):
        pt.render_table("opencharacter_table3", [measured(protocol="personagym")])
    with pytest.raises(UsageError, match="judge 'gpt-4o-mini'"):
        pt.render_table("opencharacter_table3", [measured(judge="gpt-4o-mini")])
    text = pt.render_table("opencharacter_table3", [measured(judge="gpt-4o-mini")], allow_mismatch=True)
    assert "| rbe: OpenCharacter 8B | 8B | 4.68 (.51) |" in text
    assert "| measured‡ |" in text
    assert "‡ rbe: OpenCharacter 8B: not comparable, judge 'gpt-4o-mini' (table: 'gpt-4o-2024-08-06')." in text


def test_judge_rules() -> None:
    # An ensemble matches in any order.
    row = measured(protocol="personagym", judge=["Llama-3-70B-chat", "gpt-4o-2024-05-13"], values={"AJ": {"mean": 4.1, "std": 0.7}})
    assert "| rbe: OpenCharacter 8B | 4.10 (0.70) |" in pt.render_table("personagym_table1", [row])
    # ROUGE involves no judge: a ROUGE-only row is comparable whatever judge the run used ...
    rouge_only = {"label": "mine", "protocol": "rolellm", "judge": "gpt-4o", "values": {"SPE": {"mean": 0.2327, "n": 4750}}}
    assert "| mine | - | - | - | 0.2327 | - | measured |" in pt.render_table("rolellm_en_instruction", [rouge_only])
    # ... but a win rate from another judge is not.
    with_win = {**rouge_only, "values": {"SPE": {"mean": 0.2327}, "win_rate": {"mean": 51.0}}}
    with pytest.raises(UsageError, match="judge 'gpt-4o' \\(table: 'gpt-3.5'\\)"):
        pt.render_table("rolellm_en_instruction", [with_win])


def test_measured_row_validation() -> None:
    with pytest.raises(UsageError, match="no column 'PScore'.*Did you mean 'PScore-L'"):
        pt.render_table("opencharacter_table3", [measured(values={"PScore": {"mean": 4.6}})])
    with pytest.raises(UsageError, match="outside 0..5"):
        pt.render_table("opencharacter_table3", [measured(values={"EA": {"mean": 7.0}})])
    with pytest.raises(UsageError, match="lacks \\['judge'\\]"):
        pt.render_table("opencharacter_table3", [{"label": "x", "protocol": "opencharacter", "values": {}}])
    with pytest.raises(UsageError, match="Known paper tables"):
        pt.render_table("opencharacter_table4")
    with pytest.raises(UsageError, match="Known table formats: csv, latex, markdown"):
        pt.render_table("opencharacter_table3", fmt="html")


def test_latex_escaping_and_booktabs() -> None:
    assert pt.latex_escape(r"a&b_c%d$e#f{g}h~i^j\k") == (
        r"a\&b\_c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    row = measured(label="my_model & 50% {v2}", judge="gpt-4o-mini")
    text = pt.render_table("opencharacter_table3", [row], fmt="latex", allow_mismatch=True)
    lines = text.splitlines()
    assert r"\begin{tabular}{llrrrrrrl}" in lines
    assert lines.count(r"\midrule") == 2  # after the header, and between published and measured rows
    assert r"\toprule" in lines and r"\bottomrule" in lines
    assert r"OpenCharacter & 8B & 4.70 (.53) & 4.92 (.50) & 4.32 (.60) & 4.54 (.56) & 4.85 (.38) & 4.66 (.27) & published$^\dagger$ \\" in lines
    assert r"my\_model \& 50\% \{v2\} & 8B & 4.68 (.51) & - & - & - & - & 4.66 (.26) & measured$^\ddagger$ \\" in lines
    assert "PScore-L" in text and r"\label{tab:opencharacter-table3}" in text
    assert "†" not in text and "‡" not in text  # marks are LaTeX commands, not raw Unicode


def test_csv_round_trip() -> None:
    text = pt.render_table("rolellm_en_instruction", [
        {"label": "mine, v2", "size": "7B", "protocol": "rolellm", "judge": "gpt-3.5",
         "values": {"CUS": {"mean": 0.41234, "std": 0.2, "n": 1451}, "win_rate": {"mean": 51.5, "n": 4750}}},
    ], fmt="csv")
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame.columns[:8]) == ["table", "source", "model", "size", "protocol", "judge", "flagged", "mismatch"]
    assert {"CUS_mean", "CUS_std", "CUS_n", "win_rate_mean", "win_rate_std", "win_rate_n"} <= set(frame.columns)
    assert frame["source"].tolist() == ["published"] * 5 + ["measured"]
    published = frame[frame["source"] == "published"].set_index("model")
    table = pt.load_table("rolellm_en_instruction")
    for row in table.rows:
        for column in table.columns:
            expected = row.values[column.id].mean
            value = published.loc[row.model, f"{column.id}_mean"]
            assert (pd.isna(value) and expected is None) or value == expected
    mine = frame[frame["source"] == "measured"].iloc[0]
    assert mine["model"] == "mine, v2"  # a comma in a label survives quoting
    assert (mine["CUS_mean"], mine["CUS_std"], mine["CUS_n"], mine["win_rate_n"]) == (0.41234, 0.2, 1451, 4750)
    assert pd.isna(mine["RAW_mean"]) and not mine["flagged"]
