"""RPBench-Auto (boson-ai, 2024): `rpbench-character` and `rpbench-scene`, pairwise dialogues.

Each of the 80 characters (scenes) is one dialogue, the unit of statistics and paired comparison.
The judge (--judge, exactly one: it also plays the user, so two judges would hold two different
conversations) steers the dialogue and picks, each round, the better of the model under test's and
the baseline's (--baseline-model; the paper's: gpt-4o-2024-05-13) replies. Prompts: prompts.py; the
dialogue: dialogue.py; verdicts: verdicts.py; numbers: outcome.py.

Task options (--task-option):
- `judge_order`: `both` (default: every round judged with the model in slot a and in slot b, a
  disagreement is a tie) or `random-once` (the reference: one judgment per round, the slot drawn).
- `rounds`: judged rounds per dialogue, at most the paper's (5 characters, 10 scenes): for smoke runs.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

from rolebench_eval.errors import DataError, UsageError, unknown
from rolebench_eval.requests import ChatRequest, Completion
from rolebench_eval.task_api import Evaluation, Job, RunSettings, Sample, Task, TaskOutcome
from rolebench_eval.task_registry import TaskSpec

from . import outcome, prompts
from .dialogue import DialoguePlan, dialogue_job

PROTOCOL = "rpbench-auto"
PROTOCOL_DESCRIPTION = (
    "RPBench-Auto (boson-ai/RPBench-Auto @ 01a2579): the judge plays the user and picks the better of two "
    "candidates' replies each round; the winner's reply continues the dialogue; win rate against the baseline"
)
ORDER_POLICIES = {
    "both": "each round judged in both slot assignments; the dialogue continues from the seeded random one; "
            "disagreement = tie (inconsistent)",
    "random-once": "the reference: one judgment per round, the model's slot drawn per round (seeded)",
}
DATA_FILES = {"character": "rpbench_character.jsonl", "scene": "rpbench_scene.jsonl"}
REFERENCE_JUDGE = "gpt-4-turbo-2024-04-09"  # the reference's config/judger_config.yaml
REFERENCE_BASELINE = "gpt-4o-2024-05-13"


class RPBenchTask(Task):
    def __init__(self, name: str, version: str, settings: RunSettings, subset: str):
        super().__init__(name, version, settings)
        if settings.protocol not in (None, PROTOCOL):
            raise unknown("protocol", settings.protocol, (PROTOCOL,))
        if len(settings.judges) != 1:
            raise UsageError(
                f"{name}: give exactly one --judge (it also plays the user, so each judge holds its own "
                f"dialogues); got {len(settings.judges)}. Run once per judge and `rbe compare` the runs"
            )
        if settings.baseline is None:
            raise UsageError(f"{name}: no baseline model is bound (tasks.toml must declare roles = [\"baseline\"])")
        self.subset = subset
        options = dict(settings.options)
        self.order_policy = options.get("judge_order", "both")
        if self.order_policy not in ORDER_POLICIES:
            raise unknown("--task-option judge_order", self.order_policy, ORDER_POLICIES)
        self.rounds = _rounds(options.get("rounds"), prompts.ROUNDS[subset])
        self.text = resources.files(__package__).joinpath("data", DATA_FILES[subset]).read_text(encoding="utf-8")
        self.rows = _rows(self.text, subset)
        self.judge = settings.judges[0]

    def samples(self) -> list[Sample]:
        rows = self.rows[: self.settings.limit] if self.settings.limit else self.rows
        return [Sample(_sample_id(self.subset, row), _sample_id(self.subset, row), {"row": row}) for row in rows]

    def plan(self) -> DialoguePlan:
        s = self.settings
        return DialoguePlan(
            subset=self.subset, rounds=self.rounds, both_orders=self.order_policy == "both",
            judge_role=self.judge.role, judge_label=self.judge.label, seed=s.seed,
            answer_max_tokens=s.answer_max_tokens, judge_max_tokens=s.judge_max_tokens,
        )

    def jobs(self, samples: list[Sample]) -> list[Job]:
        plan = self.plan()
        return [dialogue_job(plan, sample) for sample in samples]

    def finish(self, samples: list[Sample], results: list[Any]) -> TaskOutcome:
        return outcome.finish(self, samples, results)

    def generation_request(self, sample: Sample) -> ChatRequest:
        raise NotImplementedError(f"{self.name} is a dialogue task: it runs through jobs()")

    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        raise NotImplementedError(f"{self.name} is a dialogue task: it runs through jobs()")

    def metric_kinds(self) -> dict[str, str]:
        # Per dialogue: the share of its rounds won (ties ½): a fraction, compared as continuous.
        return {"win_rate": "continuous"}

    def manifest(self) -> dict[str, Any]:
        baseline = self.settings.baseline
        return {
            "task": self.name,
            "version": self.version,
            "protocol": {"name": PROTOCOL, "description": PROTOCOL_DESCRIPTION},
            # The baseline's identity is a measurement setting (analysis/comparability.py).
            "dialogue_roles": ["baseline"],
            "data": {
                "file": DATA_FILES[self.subset],
                "sha256": hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
                "n_dialogues": len(self.rows),
                "limit": self.settings.limit,
                "limit_rule": "first N dialogues of the file",
            },
            "dialogue": {
                "subset": self.subset,
                "rounds": self.rounds,
                "paper_rounds": prompts.ROUNDS[self.subset],
                "all_paper_rounds": self.rounds == prompts.ROUNDS[self.subset],
                "judge_order": self.order_policy,
                "judge_order_description": ORDER_POLICIES[self.order_policy],
                "assignment": "random.Random(f'{seed}:{sample_id}:{round}').getrandbits(1): 1 puts the model in slot a",
                "judge_plays_user": self.judge.label,
                "baseline": baseline.label if baseline else None,
                "reference_judge": REFERENCE_JUDGE,
                "reference_baseline": REFERENCE_BASELINE,
                "judge_reply_parser": "```json block or whole reply, json_repair; needs winner and next_round_user_speaks",
                "params": prompts.params(None).to_json(),
                "answer_max_tokens": self.settings.answer_max_tokens,
                "judge_max_tokens": self.settings.judge_max_tokens,
            },
            "templates_sha256": hashlib.sha256(json.dumps(
                [prompts.CANDIDATE_TEMPLATES[self.subset].template, prompts.JUDGE_TEMPLATES[self.subset].template]
            ).encode()).hexdigest(),
            "win_rate": "pooled over judged rounds (win 1, tie ½, loss 0), as the reference; CI: bootstrap over dialogues",
        }


def _rounds(text: str | None, paper: int) -> int:
    if text is None:
        return paper
    try:
        rounds = int(text)
    except ValueError:
        raise UsageError(f"--task-option rounds={text!r}: expected a whole number of rounds") from None
    if not 1 <= rounds <= paper:
        raise UsageError(f"--task-option rounds={rounds}: must be 1..{paper} (the paper's rounds)")
    return rounds


def _rows(text: str, subset: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"tasks/rpbench/data/{DATA_FILES[subset]}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON: {exc}") from None
        fields = {**row.get("npc_profile", {}), "background": row.get("background")} if subset == "character" else row
        missing = [k for k in (*prompts.REQUIRED_FIELDS[subset], "background") if fields.get(k) is None]
        if missing or not row.get("conversation"):
            raise DataError(f"{where}: missing field(s) {missing or ['conversation']}")
        rows.append(row)
    return rows


def _sample_id(subset: str, row: dict[str, Any]) -> str:
    return f"{subset}-{int(row['id']):02d}"


def make_task(spec: TaskSpec, settings: RunSettings) -> RPBenchTask:
    return RPBenchTask(spec.name, spec.version, settings, spec.config["subset"])
