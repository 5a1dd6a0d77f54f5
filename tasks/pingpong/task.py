"""The PingPong v2 tasks (Gusev, arXiv:2409.06820): `pingpong-en` and `pingpong-ru`.

For every (character, situation) pair of settings_v2.json, an interrogator (the simulated user,
`--user-model`, bound to USER_ROLE) talks with the model under test, which plays the character, for
the situation's number of turns; then every `--judge` scores each player turn on in_character,
entertaining and fluency (Likert 1-5) and flags refusals. Requests as protocol.py builds them,
replies read as parsing.py reads them, records and results as outcome.py builds them. Each
dialogue is one job (dialogue.py) and one unit for statistics and paired comparison.

Task options (`--task-option KEY=VALUE`, recorded in the manifest):

- `exclude_tags`: comma-separated content tags; a dialogue whose situation or character carries one
  of them is left out (e.g. `exclude_tags=possible_censoring`). Unknown tags are refused.
- `max_turns`: at most N turns per dialogue (default: each situation's own number; a smaller value
  is a deviation from the protocol, recorded as such, for cheap runs).

`--limit N`: the first N dialogues in the reference's order (characters, then situations), after
`exclude_tags`. `--max-tokens` caps the player's replies, `--judge-max-tokens` the judges' and the
interrogator's (the runner sets both for smoke runs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rolebench_eval.backends.fingerprint import file_sha256
from rolebench_eval.errors import UsageError, unknown
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams
from rolebench_eval.task_api import Evaluation, Job, RunSettings, Sample, Task, TaskOutcome
from rolebench_eval.task_registry import TaskSpec

from . import dialogue, outcome, protocol

PROTOCOL = "pingpong-v2"
PROTOCOL_DESCRIPTION = (
    "PingPong v2 (arXiv:2409.06820, ping_pong_bench run_eval_v2.py): interrogator plays the user "
    "for the situation's turns; judges score every player turn on in_character, entertaining, "
    "fluency (1-5) and refusal; final = mean of criteria"
)
OPTIONS = ("exclude_tags", "max_turns")


def make_task(spec: TaskSpec, settings: RunSettings) -> PingPongTask:
    return PingPongTask(spec, settings)


def _parse_tags(text: str | None, known: set[str]) -> tuple[str, ...]:
    if not text:
        return ()
    tags = tuple(sorted({t.strip() for t in text.split(",") if t.strip()}))
    for tag in tags:
        if tag not in known:
            raise unknown("exclude_tags tag", tag, sorted(known))
    return tags


def _parse_turns(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"--task-option max_turns={text}: give a positive number of turns")
    return value


class PingPongTask(Task):
    def __init__(self, spec: TaskSpec, settings: RunSettings):
        super().__init__(spec.name, spec.version, settings)
        options = dict(settings.options)
        for key in options:
            if key not in OPTIONS:
                raise unknown("PingPong task option", key, OPTIONS)
        if settings.protocol not in (None, PROTOCOL):
            raise unknown("protocol", settings.protocol, (PROTOCOL,))
        if settings.roleplay_template is not None:
            raise UsageError(
                f"--roleplay-template {settings.roleplay_template}: PingPong's player prompt is its "
                "character card (en_/ru_character.jinja); the option does not apply"
            )
        if settings.user is None:
            raise UsageError(f"{self.name}: no model plays the user (its tasks.toml must declare roles = [\"user\"])")
        self.language = spec.config["language"]
        self.data = protocol.load_settings(self.language)
        known = {t for c in self.data.characters for t in c.tags} | {t for s in self.data.situations for t in s.tags}
        self.exclude_tags = _parse_tags(options.get("exclude_tags"), known)
        self.max_turns = _parse_turns(options.get("max_turns"))
        self.warnings: list[str] = []
        if settings.unscored_policy != "exclude":
            self.warnings.append(
                f"unscored policy {settings.unscored_policy!r} does not apply to PingPong: stopped or "
                "unparsed dialogues are excluded and counted ('exclude')"
            )
        self._pairs = self._select()

    # -- data ------------------------------------------------------------------------------------

    def _select(self) -> list[tuple[protocol.Character, protocol.Situation]]:
        excluded = set(self.exclude_tags)
        pairs = [
            (c, s)
            for c in self.data.characters
            for s in self.data.situations
            if not excluded & (set(c.tags) | set(s.tags))
        ]
        return pairs[: self.settings.limit] if self.settings.limit is not None else pairs

    def turns(self, situation: protocol.Situation) -> int:
        return min(situation.num_turns, self.max_turns) if self.max_turns else situation.num_turns

    def samples(self) -> list[Sample]:
        samples = []
        for character, situation in self._pairs:
            sample_id = f"{self.language}-c{character.index}-s{situation.index}"
            samples.append(Sample(sample_id=sample_id, unit=sample_id, fields={
                "language": self.language,
                "character": character.char_name,
                "character_index": character.index,
                "character_tags": list(character.tags),
                "situation": situation.text,
                "situation_index": situation.index,
                "situation_tags": list(situation.tags),
                "n_turns": self.turns(situation),
            }))
        return samples

    # -- requests --------------------------------------------------------------------------------

    def params(self) -> dialogue.DialogueParams:
        s = self.settings
        interrogator = protocol.INTERROGATOR_PARAMS
        if s.judge_max_tokens:
            interrogator = replace(interrogator, max_tokens=s.judge_max_tokens)
        player = replace(protocol.PLAYER_PARAMS, max_tokens=s.answer_max_tokens or protocol.PLAYER_PARAMS.max_tokens)
        judge = replace(protocol.JUDGE_PARAMS, max_tokens=s.judge_max_tokens or protocol.JUDGE_PARAMS.max_tokens)
        # Unusable interrogator replies are asked again even from the smoke model: its replies
        # come close to the JSON asked for, and a dialogue cannot go on without one.
        return dialogue.DialogueParams(interrogator, player, judge)

    def jobs(self, samples: list[Sample]) -> list[Job]:
        pairs = {f"{self.language}-c{c.index}-s{s.index}": (c, s) for c, s in self._pairs}
        params = self.params()
        return [
            dialogue.dialogue_job(
                sample.sample_id, self.data, *pairs[sample.sample_id], sample.fields["n_turns"],
                self.settings.judges, params,
            )
            for sample in samples
        ]

    def finish(self, samples: list[Sample], results: list[Any]) -> TaskOutcome:
        judges = self.settings.judges
        records = [outcome.build_record(self.name, s, r, judges) for s, r in zip(samples, results, strict=True)]
        return TaskOutcome(records, outcome.task_results(records, judges), list(self.warnings))

    # A dialogue needs its replies turn by turn: there is no single generation request.
    def generation_request(self, sample: Sample) -> ChatRequest:
        c, _ = next((c, s) for c, s in self._pairs if f"{self.language}-c{c.index}-s{s.index}" == sample.sample_id)
        return protocol.player_request(self.data, c, [], self.params().player)

    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        raise NotImplementedError("PingPong runs as dialogue jobs (jobs/finish)")
        yield []  # pragma: no cover - makes this a generator

    def metric_kinds(self) -> dict[str, str]:
        return {m: "continuous" for m in (*outcome.METRICS, outcome.REFUSAL)}

    # -- manifest --------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        params = self.params()
        return {
            "task": self.name,
            "version": self.version,
            "protocol": {"name": PROTOCOL, "description": PROTOCOL_DESCRIPTION},
            "data": {
                "source": protocol.SOURCE,
                "language": self.language,
                "settings_version": self.data.version,
                "files_sha256": {protocol.SETTINGS_FILE: file_sha256(protocol.DATA / protocol.SETTINGS_FILE),
                                 **protocol.template_hashes(self.data)},
                "exclude_tags": list(self.exclude_tags),
                "limit": self.settings.limit,
                "limit_rule": "first N dialogues (characters, then situations) after exclude_tags",
                "n_dialogues": len(self._pairs),
                "dialogues": [f"{self.language}-c{c.index}-s{s.index}" for c, s in self._pairs],
            },
            "dialogue": {
                "max_turns": self.max_turns,
                "turns_rule": "each situation's num_turns" + (f", at most {self.max_turns} (deviation)" if self.max_turns else ""),
                "interrogator_params": params.interrogator.to_json(),
                "player_params": params.player.to_json(),
                "judge_params": params.judge.to_json(),
                "reply_normalisation": "strip, then one pass of '  ' -> ' ' (the reference's generate)",
                "interrogator_check": params.user_check,
                "judge_reply_rule": "JSON scores: one entry per player turn, criteria integers 1-5, is_refusal boolean",
            },
            "scoring": {
                "criteria": ["in_character", "entertaining", "fluency"],
                "refusals": "a dialogue a judge flags as refusal (any turn) is left out of that judge's scores",
                "judges_combined": "equal weights (the reference: 0.5 / 0.5 for its two v2 judges)",
                "units": "dialogues",
            },
            "uses_judges": bool(self.settings.judges),
            # The interrogator's identity is a measurement setting (analysis/comparability.py).
            "dialogue_roles": ["user"],
            "unscored_policy": "exclude",
            "options": {"exclude_tags": list(self.exclude_tags), "max_turns": self.max_turns},
            "non_blocking": ["data.limit", "data.n_dialogues", "data.dialogues"],
        }
