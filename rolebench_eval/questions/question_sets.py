"""Question sets: versioned artifacts in the benchmark's own layout, plus a manifest.

A set is a folder: `<persona id>.json` files holding `{task: [questions]}` (written as the
reference's `save_questions` does: `json.dump(..., indent=4)`), and `question-set.json`, the
manifest: what it was generated from (generator model and identity, prompt and data hashes, the
persona file's hash, parameters), when and by which rbe, each persona's text, environments and
counts, and `questions_sha256`, the hash of everything a run reads from the set (persona ids and
texts, and their questions). That hash is what runs record, so runs on different sets are never
compared. The generation's calls stay beside it (`calls.jsonl`), so a rerun makes none again.

`light` derives a PersonaGym-Light set (the first question of each task), the way the published
Light set was derived from the full benchmark.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rolebench_eval.errors import UsageError
from rolebench_eval.running.run_dir import write_json_atomic, write_text_atomic

SCHEMA = "rolebench-eval/question-set/v1"
MANIFEST_NAME = "question-set.json"
CALLS_NAME = "calls.jsonl"
LIGHT_SUFFIX = "_personagym-light"  # as benchmark-v1 -> benchmark-v1_personagym-light
LIGHT_RULE = "first question of each task (as PersonaGym-Light was derived from benchmark-v1)"


def canonical_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def questions_hash(entries: Iterable[tuple[str, str, Mapping[str, Sequence[str]]]]) -> str:
    """The hash of what a run reads: (id, persona text, {task: questions}) in order."""
    return canonical_hash([{"id": i, "persona": p, "questions": {t: list(q) for t, q in qs.items()}}
                           for i, p, qs in entries])


def persona_file_text(questions: Mapping[str, Sequence[str]]) -> str:
    # The reference's save_questions: json.dump(questions, file, indent=4) (ASCII escapes, no newline).
    return json.dumps({task: list(q) for task, q in questions.items()}, indent=4)


@dataclass(frozen=True)
class SetPersona:
    id: str
    persona: str
    questions: dict[str, list[str]]


@dataclass(frozen=True)
class QuestionSet:
    path: Path
    manifest: dict[str, Any]
    personas: tuple[SetPersona, ...]
    sha256: str  # questions_hash of the files as they are now

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def modified(self) -> bool:
        """The files differ from what the manifest recorded when the set was written."""
        return self.sha256 != self.manifest.get("questions_sha256")

    @property
    def most_per_task(self) -> int:
        return max((len(q) for p in self.personas for q in p.questions.values()), default=0)

    def identity(self) -> dict[str, Any]:
        """What a run's task manifest records about the set (data.question_set)."""
        generator = (self.manifest.get("inputs") or {}).get("generator") or {}
        return {
            "name": self.name,
            "path": str(self.path),
            "kind": self.manifest.get("kind"),
            "questions_sha256": self.sha256,
            "recorded_sha256": self.manifest.get("questions_sha256"),
            "inputs_sha256": self.manifest.get("inputs_sha256"),
            "generator": generator.get("label"),
            "generator_identity": generator.get("identity"),
            "derived_from": (self.manifest.get("derived_from") or {}).get("questions_sha256"),
        }


def read_manifest(folder: Path, flag: str = "question set") -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise UsageError(f"{flag} {folder}: no such folder")
    if not path.is_file():
        raise UsageError(f"{flag} {folder}: not a question set (no {MANIFEST_NAME}); make one with "
                         "`rbe questions generate`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise UsageError(f"{path}: not a question-set manifest (schema {SCHEMA!r} expected)")
    return manifest


def load_set(folder: Path, flag: str = "question set") -> QuestionSet:
    """A set as runs read it: the personas the manifest lists with a file, in its order."""
    folder = folder.expanduser().resolve()
    manifest = read_manifest(folder, flag)
    tasks = list((manifest.get("inputs") or {}).get("tasks") or [])
    personas = []
    for entry in manifest.get("personas") or []:
        if not entry.get("file"):
            continue  # environment selection failed: no questions (reported when generated)
        path = folder / entry["file"]
        try:
            questions = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"{flag} {folder}: cannot read {entry['file']}: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: invalid JSON: {exc}") from None
        bad = [t for t in tasks if not isinstance(questions.get(t), list)
               or not all(isinstance(q, str) for q in questions[t])]
        if bad or not isinstance(questions, dict):
            raise UsageError(f"{path}: field {bad[0] if bad else '?'!r} is not a list of questions")
        personas.append(SetPersona(entry["id"], entry["persona"], {t: questions[t] for t in tasks}))
    if not personas:
        raise UsageError(f"{flag} {folder}: the set has no persona with questions")
    sha = questions_hash((p.id, p.persona, p.questions) for p in personas)
    return QuestionSet(folder, manifest, tuple(personas), sha)


def write_set(folder: Path, manifest: dict[str, Any], entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Write the persona files and the manifest (last, so a set with a manifest is whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in entries:
        if entry.get("file"):
            write_text_atomic(folder / entry["file"], persona_file_text(entry["questions"]))
            written.append((entry["id"], entry["persona"], entry["questions"]))
    manifest = {**manifest, "questions_sha256": questions_hash(written)}
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    return manifest


def counts_summary(entries: Sequence[Mapping[str, Any]], tasks: Sequence[str], num_questions: int) -> dict[str, Any]:
    short = [(e["id"], t) for e in entries if e.get("file") for t in tasks if e["counts"].get(t, 0) < num_questions]
    return {
        "personas": len(entries),
        "personas_with_questions": sum(1 for e in entries if e.get("file")),
        "questions": sum(sum(e["counts"].values()) for e in entries),
        "short_tasks": len(short),
        "failed_personas": [e["id"] for e in entries if not e.get("file")],
    }


# -- Light ---------------------------------------------------------------------------------------


def derive_light(source: Path, output: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The Light set of `source`: the first question of each task, written as the benchmark's was."""
    full = load_set(source, "rbe questions light")
    if full.manifest.get("kind") == "light":
        raise UsageError(f"rbe questions light {full.path}: already a Light set")
    output = (output or full.path.parent / f"{full.path.name}{LIGHT_SUFFIX}").expanduser().resolve()
    if output == full.path:
        raise UsageError("rbe questions light: --output is the source set itself")
    derived_from = {"name": full.name, "questions_sha256": full.sha256,
                    "inputs_sha256": full.manifest.get("inputs_sha256"), "rule": LIGHT_RULE}
    if (output / MANIFEST_NAME).exists():
        existing = read_manifest(output, "--output")
        if existing.get("derived_from", {}).get("questions_sha256") != full.sha256:
            raise UsageError(f"--output {output}: holds another question set; choose another folder")
    tasks = list(full.manifest["inputs"]["tasks"])
    by_id = {p.id: p for p in full.personas}
    entries = []
    for entry in full.manifest.get("personas") or []:
        if entry["id"] not in by_id:
            continue
        questions = {t: by_id[entry["id"]].questions[t][:1] for t in tasks}
        entries.append({**entry, "questions": questions, "counts": {t: len(q) for t, q in questions.items()},
                        "short": [t for t, q in questions.items() if not q]})
    manifest = {
        **{k: v for k, v in full.manifest.items() if k not in ("personas", "totals", "questions_sha256", "calls")},
        "kind": "light",
        "derived_from": derived_from,
        "personas": [{k: v for k, v in e.items() if k != "questions"} for e in entries],
        "totals": counts_summary(entries, tasks, 1),
    }
    return output, write_set(output, manifest, entries)


# -- ls / show -----------------------------------------------------------------------------------


def find_sets(roots: Sequence[Path]) -> list[Path]:
    """Question-set folders: each root that is one, and those directly inside each root."""
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            raise UsageError(f"rbe questions ls {root}: no such folder")
        candidates = [root] if (root / MANIFEST_NAME).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        found += [p for p in candidates if (p / MANIFEST_NAME).is_file()]
    return found


def summary_row(folder: Path) -> dict[str, Any]:
    manifest = read_manifest(folder)
    totals = manifest.get("totals") or {}
    generator = (manifest.get("inputs") or {}).get("generator") or {}
    return {
        "set": str(folder),
        "kind": manifest.get("kind"),
        "personas": totals.get("personas_with_questions"),
        "questions": totals.get("questions"),
        "short_tasks": totals.get("short_tasks"),
        "generator": generator.get("label"),
        "created": manifest.get("created"),
        "sha256": (manifest.get("questions_sha256") or "")[:12],
    }


def show_lines(folder: Path, persona: str | None = None) -> list[str]:
    qset = load_set(folder, "rbe questions show")
    m = qset.manifest
    inputs = m.get("inputs") or {}
    generator = inputs.get("generator") or {}
    params = inputs.get("parameters") or {}
    lines = [
        f"question set {qset.path}",
        f"  kind {m.get('kind')}; {len(qset.personas)} persona(s); questions sha256 {qset.sha256[:12]}"
        + ("  (MODIFIED since written: recorded " + str(m.get("questions_sha256"))[:12] + ")" if qset.modified else ""),
        f"  generator {generator.get('label')} ({generator.get('backend')}; identity {generator.get('identity')})",
        f"  persona file {(inputs.get('persona_file') or {}).get('name')} "
        f"(sha256 {str((inputs.get('persona_file') or {}).get('sha256'))[:12]})",
        f"  {params.get('num_questions')} question(s) per task; request params {json.dumps(params.get('request'))}",
        f"  created {m.get('created')} by rbe {m.get('rbe_version')}; inputs sha256 {str(m.get('inputs_sha256'))[:12]}",
    ]
    if m.get("derived_from"):
        lines.append(f"  derived from {m['derived_from'].get('name')} "
                     f"({str(m['derived_from'].get('questions_sha256'))[:12]}): {m['derived_from'].get('rule')}")
    for deviation in m.get("deviations") or []:
        lines.append(f"  note: {deviation}")
    tasks = list(inputs.get("tasks") or [])
    by_id = {p.id: p for p in qset.personas}
    if persona is not None:
        match = by_id.get(persona) or next((p for p in qset.personas if p.persona == persona), None)
        if match is None:
            raise UsageError(f"--persona {persona!r}: not in {qset.path} (ids: {', '.join(list(by_id)[:5])}...)")
        lines += ["", f"{match.id}: {match.persona}"]
        entry = next(e for e in m["personas"] if e["id"] == match.id)
        lines.append(f"  environments: {entry.get('settings')}")
        for task in tasks:
            lines.append(f"  {task}:")
            lines += [f"    {n}. {q}" for n, q in enumerate(match.questions[task], start=1)]
        return lines
    lines.append("")
    lines.append(f"{'persona':<40}" + "".join(f"  {t[:12]:>12}" for t in tasks) + "  problems")
    for entry in m.get("personas") or []:
        counts = entry.get("counts") or {}
        cells = "".join(f"  {counts.get(t, 0):>12}" for t in tasks)
        problems = "; ".join(entry.get("problems") or []) or "-"
        lines.append(f"{entry['id'][:40]:<40}{cells}  {problems}")
    return lines
