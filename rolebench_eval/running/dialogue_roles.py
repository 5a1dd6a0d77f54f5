"""The dialogue roles of a run: the simulated user (`--user-model`) and the baseline (`--baseline-model`).

CONTRACT (for task plugins; PingPong, RPBench-Auto rely on it):

* A task declares the dialogue roles it calls in its tasks.toml entry: `roles = ["user"]`,
  `roles = ["baseline"]` or both, with the model its paper used for each:
  `default_user_model = "SPEC"`, `default_baseline_model = "SPEC"` (SPEC as in --judge).
* Which model plays a declared role (one model per role for the whole run):
  1. the flag (`--user-model SPEC`, `--baseline-model SPEC`), when given;
  2. else, when the run has real judges, the task's declared default (chosen tasks that declare
     different defaults for a role are refused: give the flag);
  3. else (a smoke run: the embedded model judges, or any judge is the embedded model) the
     embedded model, recorded as a deviation: plumbing only, like the embedded judge.
  A flag for a role that none of the chosen tasks declares is refused (exit 2).
* The runner binds `task_api.USER_ROLE` ("user") and `task_api.BASELINE_ROLE` ("baseline") like the
  judges: each model has its own identity in the manifest (`user_model`, `baseline_model`, present
  only when bound) and in the configuration hash; its calls are cached by (request, identity).
  Both go to the judging calls file: the generation calls file holds only the model under test's
  answers (what sibling runs of that model reuse), while the user's turns and the baseline's
  replies belong to the evaluation apparatus; sibling runs with the same user/baseline model
  reuse them (a baseline's reply to an identical dialogue prefix is never bought twice).
* `RunSettings.user` / `RunSettings.baseline` (task_api.BoundModel: role, label, smoke) say which
  roles are bound; None when not. A task must refuse to run (UsageError) when a role it needs is
  unbound, which happens only when its tasks.toml does not declare the role.
* A dialogue is a Job that yields one list of calls per round (for the model under test,
  MODEL_ROLE; the user, USER_ROLE; the baseline; judges) and receives their completions in order.
  Every call goes through the store, so a rerun after a kill replays the stored turns without
  calling anyone and continues at the first turn not stored. A completion with `ok` False has
  already been retried by the scheduler (transport retries, CONTENT_ATTEMPTS for a failed
  ModelCall.check): the dialogue must stop there and return its sample as unscored with that
  reason (`completion.error`); the other dialogues are not affected. Judge-side token limits:
  user turns should honour `RunSettings.judge_max_tokens` (set for smoke runs), the baseline's
  replies `RunSettings.answer_max_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rolebench_eval.errors import RbeError, UsageError
from rolebench_eval.models import ModelSpec, judge_spec
from rolebench_eval.running.endpoint_identity import identify_endpoints
from rolebench_eval.task_api import BASELINE_ROLE, USER_ROLE, BoundModel, RunSettings
from rolebench_eval.task_registry import TaskSpec

EMBEDDED = "embedded"
# role -> (flag, tasks.toml key of the default, what the role does: for messages)
_ROLES = {
    USER_ROLE: ("--user-model", "default_user_model", "plays the user"),
    BASELINE_ROLE: ("--baseline-model", "default_baseline_model", "is the baseline"),
}


@dataclass(frozen=True)
class DialogueModels:
    """The models bound to the dialogue roles of a run (None: no chosen task declares the role)."""

    user: ModelSpec | None = None
    baseline: ModelSpec | None = None

    def specs(self) -> list[ModelSpec]:
        return [s for s in (self.user, self.baseline) if s is not None]

    def pairs(self) -> list[tuple[str, ModelSpec]]:
        """(role, spec) of every bound role, in a fixed order."""
        return [(r, s) for r, s in ((USER_ROLE, self.user), (BASELINE_ROLE, self.baseline)) if s is not None]


def declared_roles(spec: TaskSpec) -> list[str]:
    roles = spec.config.get("roles", [])
    if not isinstance(roles, list) or not all(r in _ROLES for r in roles):
        raise UsageError(
            f"{spec.folder / 'tasks.toml'}: task {spec.name!r}: roles must be a list of "
            f"{', '.join(repr(r) for r in _ROLES)}"
        )
    return list(roles)


def parse_role_spec(text: str, flag: str, base_url: str | None) -> ModelSpec:
    """A --user-model / --baseline-model SPEC (the --judge syntax), errors naming `flag`."""
    try:
        return judge_spec(text, base_url)
    except RbeError as exc:
        # judge_spec names --judge in its messages; the user typed another flag.
        raise type(exc)(str(exc).replace("--judge", flag, 1)) from None


def resolve_dialogue_models(
    task_specs: Sequence[TaskSpec],
    user_flag: str | None,
    baseline_flag: str | None,
    smoke_run: bool,
    base_url: str | None,
    deviations: list[str],
) -> DialogueModels:
    """The user and baseline models of a run (rules in the module docstring); deviations appended."""
    chosen: dict[str, ModelSpec | None] = {}
    for role, given in ((USER_ROLE, user_flag), (BASELINE_ROLE, baseline_flag)):
        flag, default_key, what = _ROLES[role]
        declaring = [s for s in task_specs if role in declared_roles(s)]
        if not declaring:
            if given is not None:
                names = ", ".join(s.name for s in task_specs)
                raise UsageError(f"{flag}: none of the tasks ({names}) has a model that {what}")
            chosen[role] = None
            continue
        if given is not None:
            chosen[role] = parse_role_spec(given, flag, base_url)
            continue
        if smoke_run:
            chosen[role] = parse_role_spec(EMBEDDED, flag, None)
            deviations.append(
                f"no {flag} given in a smoke run: the embedded model {what} (plumbing only; "
                f"the paper's: {_default_of(declaring, default_key) or 'none declared'})"
            )
            continue
        default = _default_of(declaring, default_key)
        if default is None:
            raise UsageError(f"{flag}: {', '.join(s.name for s in declaring)} need a model that {what}; give {flag} SPEC")
        chosen[role] = parse_role_spec(default, flag, base_url)
    return DialogueModels(chosen[USER_ROLE], chosen[BASELINE_ROLE])


def _default_of(declaring: Sequence[TaskSpec], key: str) -> str | None:
    defaults = {s.name: s.config.get(key) for s in declaring if s.config.get(key)}
    values = set(defaults.values())
    if len(values) > 1:
        flag = "--user-model" if key == "default_user_model" else "--baseline-model"
        listed = ", ".join(f"{name}: {value}" for name, value in defaults.items())
        raise UsageError(f"{flag}: the tasks' papers used different models ({listed}); give {flag} SPEC")
    return next(iter(values), None)


def identify(
    models: DialogueModels, deviations: list[str], ask: Callable[[ModelSpec], ModelSpec | None]
) -> tuple[DialogueModels, RbeError | None]:
    """The user and baseline with their servers' facts (endpoint_identity.identify_endpoints)."""
    (user, baseline), error = identify_endpoints([models.user, models.baseline], deviations, ask)
    return DialogueModels(user, baseline), error


def bound_models(models: DialogueModels) -> dict[str, BoundModel | None]:
    """RunSettings' `user` and `baseline` fields."""
    return {
        "user": BoundModel(USER_ROLE, models.user.label, models.user.smoke) if models.user else None,
        "baseline": BoundModel(BASELINE_ROLE, models.baseline.label, models.baseline.smoke) if models.baseline else None,
    }


def smoke_limits(models: DialogueModels, settings: RunSettings, answer_max: int, judge_max: int,
                 deviations: list[str]) -> RunSettings:
    """The embedded model's smoke-test token limits when it plays a dialogue role and no limit is
    set (as the runner does for an embedded model under test or judge): user turns take the judges'
    limit, the baseline's replies the answers' (which the model under test shares: the two answer
    the same request)."""
    changes: dict[str, int] = {}
    if models.user is not None and models.user.smoke and settings.judge_max_tokens is None:
        changes["judge_max_tokens"] = judge_max
        deviations.append(f"judge and user-model replies limited to {judge_max} tokens (the embedded user model's "
                          "smoke-test limit); set --judge-max-tokens to change")
    if models.baseline is not None and models.baseline.smoke and settings.answer_max_tokens is None:
        changes["answer_max_tokens"] = answer_max
        deviations.append(f"answers limited to {answer_max} new tokens (the embedded baseline's smoke-test limit; "
                          "the model under test answers the same requests); set --max-tokens to change")
    return replace(settings, **changes) if changes else settings


def manifest_entries(models: DialogueModels, identity: Callable[[ModelSpec], str]) -> dict[str, dict[str, Any]]:
    """The manifest's `user_model` / `baseline_model` entries: only the bound roles, so the
    configuration hash of a run without dialogue roles is what it was before they existed."""
    entries = {}
    for key, spec in (("user_model", models.user), ("baseline_model", models.baseline)):
        if spec is not None:
            entries[key] = {**spec.describe(), "identity": identity(spec)}
    return entries
