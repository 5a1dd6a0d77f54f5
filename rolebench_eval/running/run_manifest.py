"""What a run measured, as hashes and a manifest: the one place a run's identity is built.

`config_hash` covers everything that can change a result (models by identity, settings, backend
options that change requests, task manifests) and names the run directory; `name_hash` is the same
configuration without the servers' facts (a finished run is still found while its endpoint is
down); `generation_hash` covers only what the model under test's answers depend on. Secrets never
enter: model descriptions and the command line are redacted here.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rolebench_eval.backends.base import BackendOptions
from rolebench_eval.models import ModelSpec, spec_identity
from rolebench_eval.provenance import git_revision, machine, package_versions
from rolebench_eval.running import dialogue_roles
from rolebench_eval.running.endpoint_identity import name_only_config
from rolebench_eval.secrets import redact
from rolebench_eval.task_api import RunSettings

MANIFEST_SCHEMA = "rolebench-eval/manifest/v1"
# RunSettings fields that are not settings of what is measured: who plays which role is in the
# manifest by model identity; guided output is recorded per task manifest (judge_output.py).
_NOT_SETTINGS = ("judges", "user", "baseline", "guided_roles")


def canonical_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    config_hash: str
    name_hash: str
    generation_hash: str
    smoke: bool  # a smoke model judges (or plays the user): scores carry no meaning
    manifest: dict[str, Any]


def run_identity(
    model: ModelSpec,
    judges: Sequence[ModelSpec],
    examples: ModelSpec | None,
    dialogue: dialogue_roles.DialogueModels,
    settings: RunSettings,
    task_manifests: Mapping[str, Any],
    options: BackendOptions,
    deviations: list[str],
    command: Sequence[str] | None = None,
) -> RunIdentity:
    """The hashes and manifest of a run of `model` judged by `judges` (examples: the model writing
    score examples, None when no task needs one); `command` defaults to this process's argv."""
    model_identity = spec_identity(model, options)
    config_core = {
        "model": {**model.describe(), "identity": model_identity},
        "judges": [{**j.describe(), "identity": spec_identity(j, options)} for j in judges],
        "examples_model": (
            {**examples.describe(), "identity": spec_identity(examples, options)} if examples else None
        ),
        "settings": {k: v for k, v in asdict(settings).items() if k not in _NOT_SETTINGS},
        **dialogue_roles.manifest_entries(dialogue, lambda spec: spec_identity(spec, options)),
        "backend_options": {
            "system_prompt_policy": options.system_prompt_policy,
            "overlength_policy": options.overlength_policy,
            "chat_template": options.chat_template,
            "dtype": options.dtype,
        },
        "tasks": dict(task_manifests),
    }
    config_hash = canonical_hash(config_core)
    every_model = [model, *judges, *([examples] if examples else []), *dialogue.specs()]
    name_hash = canonical_hash(name_only_config(config_core, every_model, options))
    generation_hash = canonical_hash(
        {"model": model_identity, "tasks": {name: m.get("data") for name, m in task_manifests.items()},
         "settings": [settings.roleplay_template, settings.answer_max_tokens, settings.seed, settings.limit]}
    )
    smoke = (
        any(j.smoke for j in judges)
        or bool(examples and examples.smoke)
        or bool(dialogue.user and dialogue.user.smoke)
    )
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "config_hash": config_hash,
        "name_hash": name_hash,  # the configuration without the servers' facts (endpoint_identity)
        "generation_hash": generation_hash,
        **config_core,
        "smoke_judge": smoke,
        "deviations": deviations,
        "packages": package_versions(),
        "git_revision": git_revision(),
        "machine": machine(),
        "command": sanitized_command(command),
    }
    return RunIdentity(config_hash, name_hash, generation_hash, smoke, manifest)


def sanitized_command(command: Sequence[str] | None = None) -> list[str]:
    # Keys are read from the environment, never from flags; a key inside --model-args or a URL
    # must still not reach the manifest.
    return [redact(argument) for argument in (sys.argv if command is None else command)]
