"""The manifest section of a RoleBench task (`RoleBenchTask.manifest`): what the run measured.

It records the split's data (source, file hashes, what is not computable, the item counts), the
role-play template and answer parameters, the role descriptions, the ROUGE settings, the win-rate
protocol and the task options. It is separate from task.py, which holds the task's data, prompts
and calls: this module only reads the task's settings and data.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

from rolebench_eval.backends.fingerprint import file_sha256
from rolebench_eval.judges import pairwise_ranking as ranking

from . import data_source, prompts

if TYPE_CHECKING:
    from .task import RoleBenchTask


def _files(task: RoleBenchTask) -> dict[str, str | None]:
    """Every file the split can read, relative to the root: sha256, or None when missing."""
    layout = task.layout
    paths = [
        layout.test_file("role_specific"),
        layout.baseline_file("role_specific"),
        layout.test_file("general"),
        layout.baseline_file("general"),
        layout.raw_file,
        layout.descriptions_file,
    ]
    return {p: (file_sha256(task.root / p) if (task.root / p).is_file() else None) for p in paths}


def build_manifest(task: RoleBenchTask) -> dict[str, Any]:
    # Imported here: task.py imports this module.
    from .task import DEFAULT_ANSWER_MAX_TOKENS, GENERATION, PROTOCOL, PROTOCOL_DESCRIPTION

    raw = task.raw_references()
    selected_general = task._selected["general"]
    return {
        "task": task.name,
        "version": task.version,
        "protocol": {"name": PROTOCOL, "description": PROTOCOL_DESCRIPTION},
        "data": {
            "dataset": data_source.HUB_REPO_ID,
            "split": task.split_name,
            "language": task.language,
            "source": task.source,
            # The shipped copy's location depends on the checkout: its file hashes identify it.
            "root": None if task.source == "shipped" else str(task.root.resolve()),
            "files_sha256": _files(task),
            "not_computable": {
                m: [task.relative(f) for f in files] for m, files in task.data.not_computable().items()
            },
            "limit": task.settings.limit,
            "limit_rule": "first N rows of each test file (role_specific: SPE; general: CUS, and RAW where matched)",
            "n_items": {
                "SPE": len(task._selected["role_specific"]),
                "CUS": len(selected_general) if not task.data.metrics["CUS"].missing_files else 0,
                "RAW": sum(1 for i in selected_general if i.item_id in raw),
            },
            "baseline_match": task.options["baseline_match"],
            "notes": list(task.data.notes),
        },
        "roleplay_template": {
            "name": task.template,
            "system": prompts.TEMPLATES[task.template],
            "missing_description_policy": task.prompt_missing,
            "generation": GENERATION,
            "answer_params": task.answer_params().to_json(),
            "default_max_tokens": DEFAULT_ANSWER_MAX_TOKENS,
        },
        "role_descriptions": {
            "file": task.layout.descriptions_file,
            "present": task.data.descriptions is not None,
            "roles_without_description": task.roles_without_description,
            "role_prompt_policy": task.prompt_missing,
            "judge_prompt_policy": task.judge_missing,
        },
        "rouge": {
            "package": f"rouge-score {_version('rouge-score')}",
            "measure": "rougeL F",
            "stemmer": False,
            "tokenizer": task.tokenizer,
            "jieba": _version("jieba") if task.tokenizer.startswith("jieba") else None,
            "reference_policy": task.reference_policy,
            "raw_and_cus": "one answer per general item, scored against both reference sets",
        },
        "win_rate": {
            "uses_judges": bool(task.settings.judges),
            "opponent": "RoleGPT answer from rolegpt_baseline.jsonl",
            "judge_template": task.judge_template,
            "rendering": ranking.RENDERING,
            "comparison": "pairwise against the baseline, anonymised as model_1 / model_2",
            "order_policy": task.order_policy,
            "seed": task.settings.seed if task.order_policy == "random-order" else None,
            "ties": "equal ranks, or (both-orders) disagreeing orders, count as ties",
            "judge_reference": task.options["judge_reference"],
            "judge_params": task.judge_params().to_json(),
            "greedy_top_p_policy": "not applicable: top_p is not sent to the judge",
        },
        "uses_judges": bool(task.settings.judges),
        # --judge-output guided (a deviation): judges whose replies follow prompts.ranking_regex;
        # absent when none does, so free runs keep their configuration hash.
        **({"judge_output": guided} if (guided := {
            j.role: "guided" for j in task.settings.judges if j.role in task.settings.guided_roles
        }) else {}),
        "unscored_policy": "exclude",
        "options": dict(task.options),
        # Which items were sampled and where the (hashed) files lie, not how they were scored;
        # RoleBench uses no score examples. `rbe compare` shows these without refusing.
        "non_blocking": ["data.limit", "data.n_items", "data.root", "data.source", "data.notes",
                         "run.examples_model"],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

