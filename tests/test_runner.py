"""The runner: numbers from recorded calls, no repeated call on rerun, resume after interruption,
answer reuse across judges, and corrupted run directories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rolebench_eval.cli import main
from rolebench_eval.errors import RunDirectoryError
from rolebench_eval.running.runner import RunConfig, Runner

sys.path.insert(0, str(Path(__file__).parent))
from scripted_replies import JUDGE, answer, judge_by_task  # noqa: E402

OTHER_JUDGE = "openai:judge-b,base_url=http://127.0.0.1:9/v1"


def config(tmp_path: Path, judge: str = JUDGE, **kwargs) -> RunConfig:
    return RunConfig(
        tasks=["personagym-light"], judges=[judge], limit=2, results_dir=tmp_path / "results",
        progress=False, max_tokens=16, **kwargs,
    )


def test_run_numbers_come_from_the_recorded_calls(tmp_path: Path, scripted_backends) -> None:
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    result = Runner(config(tmp_path), log=lambda m: None).run()
    metrics = result.results["tasks"]["personagym-light"]["metrics"]
    assert {k: metrics[k]["mean"] for k in ["EA", "TC", "LH", "PC", "AJ"]} == {"EA": 4, "TC": 5, "LH": 3, "PC": 4, "AJ": 2}
    assert metrics["PersonaScore"]["mean"] == pytest.approx(3.6) and metrics["PersonaScore"]["n"] == 2
    assert result.calls_made == {"generation": 10, "judging": 20}
    assert len(backends["embedded"].requests) == 10 and len(backends["judge-a"].requests) == 20
    run = result.run_dir
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 10 and records[0]["answer"].startswith("In character: ")
    assert records[0]["judgments"][0]["score"] == 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config_hash"] == result.results["config_hash"]
    assert manifest["tasks"]["personagym-light"]["protocol"]["name"] == "opencharacter"
    assert manifest["judges"][0]["base_url"] == "http://127.0.0.1:9/v1"
    assert (tmp_path / "leaderboard.md").read_text().count("4.00 (.00)") >= 2
    assert "Persona" in (run / "report.md").read_text()


def test_rerun_makes_no_call_and_prints_the_same_results(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    first = Runner(config(tmp_path), log=lambda m: None).run()
    results_before = (first.run_dir / "results.json").read_text()
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    second = Runner(config(tmp_path), log=lambda m: None).run()
    assert second.calls_made == {"generation": 0, "judging": 0}
    assert backends == {}  # no backend was even loaded
    assert (second.run_dir / "results.json").read_text() == results_before


def test_interrupted_run_resumes_without_repeating_a_call(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task}, fail_after={"judge-a": 7})
    with pytest.raises(KeyboardInterrupt):
        Runner(config(tmp_path), log=lambda m: None).run()
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    result = Runner(config(tmp_path), log=lambda m: None).run()
    assert "embedded" not in backends  # all answers were saved before the interruption
    assert len(backends["judge-a"].requests) == 20 - 7
    assert result.calls_made == {"generation": 0, "judging": 13}
    calls = (result.run_dir / "calls" / "judging.jsonl").read_text().splitlines()
    assert len(calls) == 20 and len({json.loads(c)["key"] for c in calls}) == 20


def test_partial_last_line_from_a_kill_is_redone(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    run = Runner(config(tmp_path), log=lambda m: None).run().run_dir
    calls = run / "calls" / "judging.jsonl"
    text = calls.read_text()
    calls.write_text(text[: len(text) - 40])  # the process died while writing the last line
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    Runner(config(tmp_path), log=lambda m: None).run()
    assert len(backends["judge-a"].requests) == 1


def test_another_judge_reuses_the_answers(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    first = Runner(config(tmp_path), log=lambda m: None).run()
    backends = scripted_backends({"embedded": answer, "judge-b": judge_by_task})
    second = Runner(config(tmp_path, judge=OTHER_JUDGE), log=lambda m: None).run()
    assert second.run_dir != first.run_dir
    assert "embedded" not in backends and second.calls_made["generation"] == 0
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["answers_reused_from"] == [first.run_dir.name]
    board = (tmp_path / "leaderboard.md").read_text()
    assert "`judge-a`" in board and "`judge-b`" in board and board.count("## personagym-light") == 2


def test_corrupted_run_directory_is_reported_with_file_and_line(tmp_path: Path, scripted_backends, capsys) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    run = Runner(config(tmp_path), log=lambda m: None).run().run_dir
    calls = run / "calls" / "generation.jsonl"
    lines = calls.read_text().splitlines(keepends=True)
    lines[3] = "{not json\n"
    calls.write_text("".join(lines))
    with pytest.raises(RunDirectoryError, match=r"generation.jsonl, line 4"):
        Runner(config(tmp_path), log=lambda m: None).run()
    (run / "manifest.json").write_text("{")
    code = main(["run", "--tasks", "personagym-light", "--judge", JUDGE, "--limit", "2", "--max-tokens", "16",
                 "--results-dir", str(tmp_path / "results"), "--no-progress"])
    assert code == 2
    assert "manifest.json is not valid JSON" in capsys.readouterr().err


PLUGIN_TASK = '''
from rolebench_eval.requests import ChatRequest, GenerationParams, Message
from rolebench_eval.analysis.statistics import summarize
from rolebench_eval.task_api import Sample, Task, TaskOutcome


class ExactMatch(Task):
    WORDS = ["alpha", "beta", "gamma"]

    def samples(self):
        return [Sample(f"w{i}", f"w{i}", {"word": w}) for i, w in enumerate(self.WORDS[: self.settings.limit])]

    def generation_request(self, sample):
        return ChatRequest((Message("user", "Repeat: " + sample.fields["word"]),), GenerationParams(max_tokens=8))

    def evaluate(self, samples, answers):
        yield []  # no judge stage: a plugin may skip straight to scoring
        values = [float(a.text.strip().endswith(s.fields["word"])) for s, a in zip(samples, answers)]
        records = [{"sample_id": s.sample_id, "unit": s.unit, "answer": a.text, "score": v}
                   for s, a, v in zip(samples, answers, values)]
        results = {"metrics": {"match": summarize(values, 0)}, "metric_names": {"match": "exact match"},
                   "per_unit": {s.unit: {"match": v} for s, v in zip(samples, values)}}
        return TaskOutcome(records, results)

    def manifest(self):
        return {"task": self.name, "version": self.version, "data": {"words": self.WORDS}}

    def metric_kinds(self):
        return {"match": "continuous"}


def make(spec, settings):
    return ExactMatch(spec.name, spec.version, settings)
'''


def test_a_task_folder_outside_the_project_runs_with_no_engine_change(tmp_path: Path, scripted_backends) -> None:
    plugin = tmp_path / "my-plugins" / "exact"
    plugin.mkdir(parents=True)
    (plugin / "tasks.toml").write_text(
        '[[task]]\nname = "exact-match"\nfactory = "impl:make"\nversion = "2"\nrequires_judge = false\n'
    )
    (plugin / "impl.py").write_text(PLUGIN_TASK)
    scripted_backends({"embedded": lambda r: "beta" if "beta" in r.messages[0].content else "nope"})
    result = Runner(
        RunConfig(tasks=["exact-match"], limit=3, results_dir=tmp_path / "results", progress=False,
                  include_paths=[str(tmp_path / "my-plugins")]),
        log=lambda m: None,
    ).run()
    task = result.results["tasks"]["exact-match"]
    assert task["metrics"]["match"]["mean"] == pytest.approx(1 / 3)
    assert task["judges"] == [] or result.results["judges"] == []
    assert "exact match" in (tmp_path / "leaderboard.md").read_text()


def test_changing_only_the_aggregation_policy_makes_no_model_call(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    first = Runner(config(tmp_path), log=lambda m: None).run()
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    second = Runner(config(tmp_path, unscored_policy="reference-zero"), log=lambda m: None).run()
    assert second.run_dir != first.run_dir
    assert backends == {} and second.calls_made == {"generation": 0, "judging": 0}
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["judgments_reused_from"] == [first.run_dir.name]
    assert second.results["tasks"]["personagym-light"]["unscored_policy"] == "reference-zero"


def test_rerun_with_unchanged_calls_reads_the_derived_files(tmp_path: Path, scripted_backends, monkeypatch) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    first = Runner(config(tmp_path), log=lambda m: None).run()
    import rolebench_eval.running.runner as runner

    # A rerun whose calls files are unchanged must not even read them.
    monkeypatch.setattr(runner, "CallStore", None)
    second = Runner(config(tmp_path), log=lambda m: None).run()
    assert second.results == first.results
    assert second.calls_made == {"generation": 0, "judging": 0}
    assert second.calls_reused == {"generation": 10, "judging": 20}


# -- content faults: unusable replies are failed calls, retried, counted ----------------------------

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
RANKING = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"


def rolebench_config(tmp_path: Path) -> RunConfig:
    return RunConfig(tasks=["rolebench-zh"], judges=[JUDGE], results_dir=tmp_path / "results", progress=False,
                     task_options={"rolebench_dir": str(FULL)}, write_leaderboard=False)


def test_empty_answer_is_retried_judged_counted_and_retried_by_the_next_run(tmp_path: Path, scripted_backends) -> None:
    empty_for: list[str] = []

    def sometimes_empty(request) -> str:
        question = request.messages[-1].content
        empty_for[:] = empty_for or [question]  # the first question asked gets nothing, always
        return "  " if question == empty_for[0] else answer(request)

    backends = scripted_backends({"embedded": sometimes_empty, "judge-a": judge_by_task})
    result = Runner(config(tmp_path), log=lambda m: None).run()
    assert len(backends["embedded"].requests) == 10 + 2  # the empty one asked 3 times in all
    row = next(r for r in result.results["calls"]["by_role"] if r["stage"] == "generate")
    assert (row["made"], row["failed"], row["empty_answers"], row["retried_attempts"]) == (10, 0, 1, 2)
    assert row["attempt_errors"] == {"unusable reply: empty answer": 2}
    assert result.incomplete == []  # an empty answer is the model's answer, not a failed run
    records = [json.loads(line) for line in (result.run_dir / "samples.jsonl").read_text().splitlines()]
    empty = [r for r in records if r["answer"] is not None and not r["answer"].strip()]
    assert len(empty) == 1 and empty[0]["answer_error"] is None  # judged as the model's answer
    stored = [json.loads(line) for line in (result.run_dir / "calls" / "generation.jsonl").read_text().splitlines()]
    failed = [s["completion"] for s in stored if s["completion"]["error"]]
    assert len(failed) == 1 and failed[0]["attempts"] == 3 and "empty answer" in failed[0]["error"]
    backends = scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    again = Runner(config(tmp_path), log=lambda m: None).run()
    assert len(backends["embedded"].requests) == 1  # only the empty answer is asked again
    assert again.results["calls"]["total"]["empty_answers"] == 0


def test_unusable_judge_reply_is_retried_then_failed_and_the_run_is_incomplete(tmp_path: Path, scripted_backends) -> None:
    bad: list[str] = []

    def judge(request) -> str:
        content = request.messages[1].content
        bad[:] = bad or [content]
        return "I like the first one." if content == bad[0] else RANKING

    backends = scripted_backends({"embedded": answer, "judge-a": judge})
    result = Runner(rolebench_config(tmp_path), log=lambda m: None).run()
    assert len(backends["judge-a"].requests) == 12 + 2
    row = next(r for r in result.results["calls"]["by_role"] if r["stage"] == "pairwise_ranking")
    assert (row["role"], row["made"], row["failed"], row["retried_attempts"]) == ("judge:judge-a", 12, 1, 2)
    assert len(result.incomplete) == 1 and "1 pairwise_ranking call(s) of judge:judge-a" in result.incomplete[0]
    judgments = result.results["tasks"]["rolebench-zh"]["items"]["judgments"]
    assert judgments["n_unscored"] == 1 and "no parseable ranking" in next(iter(judgments["unscored_reasons"]))
    results_json = json.loads((result.run_dir / "results.json").read_text())
    assert results_json["incomplete"] == result.incomplete  # written, and a cached rerun reads it
    backends = scripted_backends({"embedded": answer, "judge-a": lambda r: RANKING})
    again = Runner(rolebench_config(tmp_path), log=lambda m: None).run()
    assert len(backends["judge-a"].requests) == 1 and "embedded" not in backends
    assert again.incomplete == []


def test_a_stored_answer_that_fails_todays_check_is_asked_again(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": lambda r: RANKING})
    run = Runner(rolebench_config(tmp_path), log=lambda m: None).run().run_dir
    calls = run / "calls" / "judging.jsonl"
    lines = [json.loads(line) for line in calls.read_text().splitlines()]
    lines[0]["completion"]["text"] = ""  # stored as a success by an older version
    calls.write_text("".join(json.dumps(line) + "\n" for line in lines))
    backends = scripted_backends({"embedded": answer, "judge-a": lambda r: RANKING})
    again = Runner(rolebench_config(tmp_path), log=lambda m: None).run()
    assert len(backends["judge-a"].requests) == 1
    assert again.results["calls"]["total"]["made"] == 1 and again.results["calls"]["total"]["reused"] == 6 + 11


def test_terminal_summary_lists_every_unscored_reason() -> None:
    from rolebench_eval.analysis.report import render_terminal

    reasons = {f"reason {k}": 5 - k for k in range(5)}
    results = {"model": {"label": "m"}, "tasks": {"t": {"metrics": {}, "items": {
        "n": 20, "n_scored": 10, "n_unscored": 10, "unscored_reasons": reasons}}}}
    line = next(l for l in render_terminal(results).splitlines() if l.startswith("items:"))
    assert line.endswith("(5x reason 0; 4x reason 1; 3x reason 2; 2x reason 3; 1x reason 4)")


def test_max_calls_stops_cleanly_and_a_rerun_continues(tmp_path: Path, scripted_backends) -> None:
    # 30 calls in all (10 answers, 10 score examples, 10 gradings); at most 12 new ones per run.
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    first = Runner(config(tmp_path, max_calls=12), log=lambda m: None).run()
    assert sum(first.calls_made.values()) == 12
    assert any("--max-calls 12" in line for line in first.incomplete)
    # Refused: every call asked for beyond the 12; gradings whose answer or examples were refused
    # are never asked.
    not_sent = first.results["calls"]["total"]["not_sent"]
    assert 0 < not_sent and 12 + not_sent <= 30
    lines = sum(len((first.run_dir / "calls" / f).read_text().splitlines()) for f in ("generation.jsonl", "judging.jsonl"))
    assert lines == 12  # refused calls are not stored: nothing is recorded as failed
    second = Runner(config(tmp_path, max_calls=12), log=lambda m: None).run()
    third = Runner(config(tmp_path, max_calls=12), log=lambda m: None).run()
    made = [sum(r.calls_made.values()) for r in (first, second, third)]
    assert sum(made) == 30 and made[2] <= 12  # every call made exactly once over the three runs
    assert third.incomplete == []
    metrics = third.results["tasks"]["personagym-light"]["metrics"]
    assert metrics["EA"]["mean"] == 4 and metrics["AJ"]["mean"] == 2


def test_each_lane_is_recorded_with_its_batches(tmp_path: Path, scripted_backends) -> None:
    scripted_backends({"embedded": answer, "judge-a": judge_by_task})
    result = Runner(config(tmp_path), log=lambda m: None).run()
    lanes = result.results["calls"]["lanes"]
    # The local model's lane took its 10 answers as one engine batch (nothing else was ready).
    assert lanes["embedded"]["requests"] == 10 and lanes["embedded"]["engine_batches"] == 1
    assert lanes["judge-a"]["requests"] == 20
