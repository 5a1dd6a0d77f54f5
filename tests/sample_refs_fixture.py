"""A small scripted run whose samples were saved (gzipped) before samples referred to their calls.

`scripted_run` makes the same run with whatever code is installed: PersonaGym (protocol
`personagym`: batched score examples, two judges), PersonaGym-Light (`opencharacter`) and RoleBench
(English, with a judge), 2 personas / items each, scripted models whose replies depend on the
request (so every record's texts differ), one empty answer (retried, judged as the answer) and one
judge reply that stays unusable (retried, stored failed with its text). The fixture
`fixtures/samples_v1/samples.jsonl.gz` is this run's samples.jsonl as the code wrote it before issue
13 (schema 1, every text inline); `tests/test_sample_refs.py` checks that `iter_samples` gives the same
values field by field. Regenerate it only from the old code:
`.venv/bin/python tests/sample_refs_fixture.py OUT.jsonl.gz`.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "samples_v1" / "samples.jsonl.gz"
ROLEBENCH = HERE / "fixtures" / "rolebench" / "full"
JUDGE_A = "openai:judge-a,base_url=http://127.0.0.1:9/v1"
JUDGE_B = "openai:judge-b,base_url=http://127.0.0.1:9/v1"
RANKING = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"
SCORES = {"Expected Action": 4, "Toxicity": 5, "Linguistic": 3, "Persona Consistency": 4, "Action Justification": 2}


def _tag(request) -> str:  # noqa: ANN001 - a ChatRequest
    return hashlib.sha256(repr(request.to_json()).encode()).hexdigest()[:8]


def answer(request) -> str:  # noqa: ANN001
    question = request.messages[-1].content
    if "?" in question and question.rstrip().endswith("?") and _tag(request).startswith(("0", "1")):
        return "  "  # an empty answer: asked again, then judged as the model's answer
    return f"In character [{_tag(request)}]: " + question[:40]


def judge(label: str) -> Callable:
    def reply(request) -> str:  # noqa: ANN001
        content = request.messages[-1].content
        if "model_1" in content and "model_2" in content:
            return RANKING
        if request.messages[0].role == "user":  # score examples are asked without a system message
            return "\n".join(f'Score {k}: Response - "example {k} by {label} [{_tag(request)}]"' for k in range(1, 6))
        n = max(1, content.count("Score Examples"))
        score = next((s for name, s in SCORES.items() if f"Evaluation Task:\\n\\n{name}" in content), 3)
        if label == "judge-b":
            if "Evaluation Task:\\n\\nToxicity" in content:
                return "I would rather not grade these."  # unusable: no segments, stored failed
            score = 6 - score
        return " ".join(f"({k}) Evaluation: [{_tag(request)}] fits. Therefore, the final score is {score}"
                        for k in range(1, n + 1))

    return reply


REPLIES = {"embedded": answer, "judge-a": judge("judge-a"), "judge-b": judge("judge-b")}


def configs(results: Path) -> list:
    from rolebench_eval.running.runner import RunConfig

    common = dict(results_dir=results, progress=False, max_tokens=16, limit=2, write_leaderboard=False)
    return [
        RunConfig(tasks=["personagym"], judges=[JUDGE_A, JUDGE_B], **common),
        RunConfig(tasks=["personagym-light"], judges=[JUDGE_A], **common),
        RunConfig(tasks=["rolebench-en"], judges=[JUDGE_A], task_options={"rolebench_dir": str(ROLEBENCH)}, **common),
    ]


def scripted_run(results: Path) -> list[Path]:
    """Run the fixture's three runs (scripted backends must already be installed); their paths."""
    from rolebench_eval.running.runner import Runner

    return [Runner(c, log=lambda m: None).run().run_dir for c in configs(results)]


def install(monkeypatch_setattr: Callable) -> None:
    """Route every model to the scripted replies (`monkeypatch.setattr`, or plain setattr)."""
    import rolebench_eval.running.runner as runner

    sys.path.insert(0, str(HERE))
    from conftest import ScriptedBackend

    monkeypatch_setattr(runner, "build_backend", lambda spec, options: ScriptedBackend(spec.label, REPLIES[spec.label]))
    monkeypatch_setattr(runner, "preflight", lambda spec: None)


if __name__ == "__main__":
    install(setattr)
    with tempfile.TemporaryDirectory() as tmp:
        runs = scripted_run(Path(tmp) / "results")
        out = Path(sys.argv[1])
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            for run in runs:
                with (run / "samples.jsonl").open("rb") as samples:
                    shutil.copyfileobj(samples, handle)
        print(out, [(r.name, sum(1 for _ in (r / "samples.jsonl").open())) for r in runs])
