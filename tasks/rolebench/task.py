"""The RoleBench tasks (RoleLLM, arXiv:2310.00746): ROUGE-L CUS / RAW / SPE and, with a judge, the
win rate against the RoleGPT baseline answers.

One task per split (`rolebench-en`, `rolebench-zh`, `rolebench-en-rolegen`; see tasks.toml). The
model answers every role-specific test item (SPE) and every general test item once; that one answer
is scored against the RoleGPT references (CUS) and, where the instruction's original answer is
known, against it (RAW). Whatever part of the dataset is present is used: a metric whose files are
missing is reported as not computed with the missing paths, the rest still runs.

Task options (`--task-option KEY=VALUE`, recorded in manifest.json; defaults in `OPTIONS`):

- `rolebench_dir`: a RoleBench directory in the dataset's own layout, or `hub` / `hub@REVISION`
  to download the evaluation files of `ZenMoore/RoleBench` (needs the network). Unset: the
  `RBE_ROLEBENCH_DIR` environment variable, else the partial copy shipped in `data/`.
- `reference_policy`: `max` (best ROUGE-L F over an item's references) or `first`.
- `zh_tokenizer`: ROUGE tokenizer for Chinese: `char` (per character), `jieba`, `jieba-punct`,
  `char-alnum` (see rouge_metrics.py). English always uses rouge-score's own tokenizer.
- `win_rate_order`: `both-orders` (disagreement = tie, counted as inconsistent) or
  `random-order` (one judgment, the model's position drawn per item from --seed).
- `judge_reference`: `role-specific` (the judge's question includes the item's reference answer
  for role-specific items, as the RoleLLM ranking prompt foresees) or `none`.
- `missing_description`: `omit` (drop the description clause from the role prompt and the
  description sentence from the judge prompt) or `empty` (keep them with an empty description).
- `baseline_match`: how RoleGPT baseline rows are paired with test items:
  `normalised-last` or `exact-then-normalised` (see dataset.py).

`--limit N` takes the first N rows of each test file: N role-specific items (SPE) and N general
items (CUS; RAW on those of them that have an original answer).

Pipelined: one job per item (`jobs`): the answer, then every judge's ranking calls for it at once;
`finish` scores the jobs' `item_jobs.ItemResult`s (outcome.py builds the records and results).
`evaluate` runs the same judging step in lockstep. manifest.py builds the manifest section.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from rolebench_eval.errors import unknown
from rolebench_eval.judges import pairwise_ranking as ranking
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams
from rolebench_eval.task_api import (
    MODEL_ROLE,
    Evaluation,
    Job,
    ModelCall,
    RunSettings,
    Sample,
    Task,
    TaskOutcome,
)
from rolebench_eval.task_registry import TaskSpec

from . import data_source, dataset, item_jobs, outcome, prompts, rouge_metrics
from .aggregation import AVG, ROUGE_METRICS
from .manifest import build_manifest
from .outcome import METRIC_NAMES  # noqa: F401 - re-exported: it names the results' metrics

PROTOCOL = "rolellm"
PROTOCOL_DESCRIPTION = (
    "RoleLLM (arXiv:2310.00746): RoleGPT system prompt, greedy answers; ROUGE-L F CUS/RAW/SPE "
    "(rouge-score); pairwise RoleLLM ranking prompt against the RoleGPT baseline answer"
)
DEFAULT_ANSWER_MAX_TOKENS = 512
GENERATION = "greedy"
OPTIONS: dict[str, str | None] = {
    "rolebench_dir": None,
    "reference_policy": rouge_metrics.DEFAULT_REFERENCE_POLICY,
    "zh_tokenizer": rouge_metrics.DEFAULT_TOKENIZER["zh"],
    "win_rate_order": "both-orders",
    "judge_reference": "role-specific",
    "missing_description": "omit",
    "baseline_match": "normalised-last",
}
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "reference_policy": rouge_metrics.REFERENCE_POLICIES,
    # `default` is listed so that check_tokenizer explains why it cannot score Chinese.
    "zh_tokenizer": rouge_metrics.TOKENIZERS,
    "win_rate_order": ranking.ORDER_POLICIES,
    "judge_reference": ("role-specific", "none"),
    "missing_description": ("omit", "empty"),
    "baseline_match": dataset.BASELINE_MATCH_POLICIES,
}
# `missing_description` -> (role prompt policy, judge prompt policy), by their modules' names.
_MISSING_POLICIES = {
    "omit": ("omit-clause", "omit-sentence"),
    "empty": ("empty-description", "empty-description"),
}
STAGE = "pairwise_ranking"


def make_task(spec: TaskSpec, settings: RunSettings) -> RoleBenchTask:
    return RoleBenchTask(spec, settings)


def _options(given: dict[str, str]) -> dict[str, str | None]:
    options = dict(OPTIONS)
    for key, value in given.items():
        if key not in OPTIONS:
            raise unknown("RoleBench task option", key, OPTIONS)
        if key in OPTION_CHOICES and value not in OPTION_CHOICES[key]:
            raise unknown(f"{key} value", value, OPTION_CHOICES[key])
        options[key] = value
    return options


class RoleBenchTask(Task):
    def __init__(self, spec: TaskSpec, settings: RunSettings):
        super().__init__(spec.name, spec.version, settings)
        self.split_name = spec.config["split"]
        self.options = _options(dict(settings.options))
        if settings.protocol not in (None, PROTOCOL):
            raise unknown("protocol", settings.protocol, (PROTOCOL,))
        self.warnings: list[str] = []
        if settings.unscored_policy != "exclude":
            self.warnings.append(
                f"unscored policy {settings.unscored_policy!r} does not apply to RoleBench: failed "
                "generations and unparsed judgments are excluded and counted ('exclude')"
            )
        self.root, self.source = self._resolve_root(self.options["rolebench_dir"])
        self.data = dataset.load_split(
            self.split_name, self.root, baseline_match=str(self.options["baseline_match"])
        )
        self.language = self.data.language
        self.layout = dataset.SPLITS[self.split_name]
        self.template = settings.roleplay_template or prompts.TEMPLATE_FOR_LANGUAGE[self.language]
        if self.template not in prompts.TEMPLATES:
            raise unknown("role-play template", self.template, prompts.TEMPLATES)
        self.tokenizer = rouge_metrics.check_tokenizer(
            self.language, self.options["zh_tokenizer"] if self.language == "zh" else None
        )
        self.reference_policy = str(self.options["reference_policy"])
        self.order_policy = str(self.options["win_rate_order"])
        self.prompt_missing, self.judge_missing = _MISSING_POLICIES[str(self.options["missing_description"])]
        self.judge_template = ranking.TEMPLATE_FOR_LANGUAGE[self.language]
        self._manifest: dict[str, Any] | None = None
        self._selected = self._select_items()
        self._item_index: dict[str, dataset.RoleBenchItem] | None = None
        self._description_warning()

    # -- data ----------------------------------------------------------------------------------

    @staticmethod
    def _resolve_root(option: str | None) -> tuple[Path, str]:
        if option is not None and (option == "hub" or option.startswith("hub@")):
            revision = option.partition("@")[2] or None
            path = data_source.fetch_from_hub(revision=revision)
            return path, f"hub:{data_source.HUB_REPO_ID}@{revision or 'main'}"
        if option is not None:
            return data_source.resolve_root(option), "task-option:rolebench_dir"
        if os.environ.get(data_source.ENV_VAR):
            return data_source.resolve_root(None), f"env:{data_source.ENV_VAR}"
        return data_source.resolve_root(None), "shipped"

    def relative(self, path: str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return path

    def _select_items(self) -> dict[str, list[dataset.RoleBenchItem]]:
        """SPE items and general items (CUS, and RAW where matched), first N of each file."""
        limit = self.settings.limit
        spe = list(self.data.metrics["SPE"].items)
        general = list(self.data.metrics["CUS"].items)
        if limit is not None:
            spe, general = spe[:limit], general[:limit]
        return {"role_specific": spe, "general": general}

    def raw_references(self) -> dict[str, tuple[str, ...]]:
        return {item.item_id: item.references for item in self.data.metrics["RAW"].items}

    def _description_warning(self) -> None:
        roles = sorted({i.role for items in self._selected.values() for i in items})
        missing = [r for r in roles if self.data.description(r) is None]
        self.roles_without_description = missing
        if not missing:
            return
        policies = (
            f"role prompt policy {self.prompt_missing!r}, judge prompt policy {self.judge_missing!r}"
        )
        if self.data.descriptions is None:
            where = self.relative(self.data.descriptions_missing[0])
            self.warnings.append(
                f"role descriptions unavailable (missing {where}): {len(missing)} role(s) prompted "
                f"without a description ({policies}); the RoleLLM prompt includes one"
            )
        else:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            self.warnings.append(
                f"no description in {self.layout.descriptions_file} for {len(missing)} role(s): "
                f"{shown} ({policies})"
            )

    # -- generation ----------------------------------------------------------------------------

    def samples(self) -> list[Sample]:
        raw = self.raw_references()
        samples = []
        for subset, items in self._selected.items():
            for item in items:
                metrics = ["SPE"] if subset == "role_specific" else ["CUS"] + (["RAW"] if item.item_id in raw else [])
                samples.append(
                    Sample(
                        sample_id=item.item_id,
                        unit=item.item_id,
                        fields={
                            "split": item.split,
                            "subset": subset,
                            "source": item.source,
                            "line": item.line,
                            "role": item.role,
                            "question": item.question,
                            "type": list(item.type),
                            "metrics": metrics,
                        },
                    )
                )
        return samples

    def answer_params(self) -> GenerationParams:
        return GenerationParams(
            temperature=0.0,
            top_p=None,
            max_tokens=self.settings.answer_max_tokens or DEFAULT_ANSWER_MAX_TOKENS,
            seed=self.settings.seed,
        )

    def generation_request(self, sample: Sample) -> ChatRequest:
        role = sample.fields["role"]
        messages, _ = prompts.build_role_messages(
            role,
            sample.fields["question"],
            self.data.description(role),
            template=self.template,
            missing_description=self.prompt_missing,
        )
        return ChatRequest(messages, self.answer_params())

    # -- evaluation ----------------------------------------------------------------------------

    def judge_params(self) -> GenerationParams:
        return GenerationParams(
            temperature=ranking.JUDGE_PARAMS.temperature,
            top_p=ranking.JUDGE_PARAMS.top_p,
            max_tokens=self.settings.judge_max_tokens or ranking.JUDGE_PARAMS.max_tokens,
        )

    def items_by_id(self) -> dict[str, dataset.RoleBenchItem]:
        # Built once: every item's job looks its item up.
        if self._item_index is None:
            self._item_index = {i.item_id: i for items in self._selected.values() for i in items}
        return self._item_index

    def baseline(self, item: dataset.RoleBenchItem) -> tuple[str | None, str | None]:
        """(baseline answer, None) or (None, why there is none)."""
        baseline = self.data.baselines.get(item.subset)
        if baseline is None:
            return None, "no baseline file"
        if baseline.missing_files:
            return None, f"missing {self.relative(baseline.missing_files[0])}"
        answer = baseline.answers.get(item.item_id)
        if answer is None:
            return None, f"no row for the item in {self.layout.baseline_file(item.subset)}"
        return answer, None


    # One job per item: its answer, then (with judges) every judge's ranking calls for it at once,
    # as soon as that answer is back. `evaluate` drives the same judging step for all items in
    # lockstep (one batch of ranking calls), so both interfaces give the same records and results.

    def jobs(self, samples: list[Sample]) -> list[Job]:
        return [self._item_job(sample) for sample in samples]

    def _item_job(self, sample: Sample) -> Job:
        (answer,) = yield [ModelCall(MODEL_ROLE, "generate", self.generation_request(sample))]
        result = yield from self._judge_item(sample, answer)
        return result

    def evaluate(self, samples: list[Sample], answers: list[Completion]) -> Evaluation:
        judging = [self._judge_item(sample, answer) for sample, answer in zip(samples, answers, strict=True)]
        results = yield from item_jobs.lockstep(judging)
        return self.finish(samples, results)

    def _judge_item(self, sample: Sample, answer: Completion) -> Job:
        """The item's ranking calls, every judge and order at once (none without judges, without
        a baseline answer, or for a failed answer), then what `finish` needs of the item."""
        judges = self.settings.judges
        item = self.items_by_id()[sample.sample_id]
        plan: tuple[ranking.RankingRequest, ...] | None = None
        skipped: str | None = None
        if judges:
            baseline, why = self.baseline(item)
            if baseline is None:
                skipped = why or "no baseline answer"
            elif answer.ok:
                plan = self._ranking_plan(item, answer.text or "", baseline)
        calls = [
            # The embedded smoke judge's replies carry no meaning and rarely parse: retrying them
            # would triple its calls and make every rerun repeat them; they stay unscored.
            ModelCall(judge.role, STAGE, self._guided(judge.role, request.request),
                      check=None if judge.smoke else ranking.reply_check)
            for judge in judges
            for request in plan or ()
        ]
        replies: list[Completion] = (yield calls) if calls else []
        return item_jobs.ItemResult(sample.sample_id, answer, plan, skipped, tuple(replies))

    def _guided(self, role: str, request: ChatRequest) -> ChatRequest:
        """The judge request, constrained to RoleLLM's ranking list for a guided role."""
        if role not in self.settings.guided_roles:
            return request
        regex = prompts.ranking_regex(ranking.ANONYMOUS_NAMES, request.params.max_tokens)
        return replace(request, guided_regex=regex)

    def _ranking_plan(
        self, item: dataset.RoleBenchItem, answer: str, baseline: str
    ) -> tuple[ranking.RankingRequest, ...]:
        reference = (
            item.references[0]
            if self.options["judge_reference"] == "role-specific" and item.subset == "role_specific"
            else None
        )
        requests, _ = ranking.build_ranking_requests(
            item.item_id,
            item.role,
            self.data.description(item.role),
            item.question,
            answer,
            baseline,
            policy=self.order_policy,
            seed=self.settings.seed,
            template=self.judge_template,
            reference=reference,
            missing_description=self.judge_missing,
            params=self.judge_params(),
        )
        return requests

    def finish(self, samples: list[Sample], results: list[Any]) -> TaskOutcome:
        return outcome.finish(self, samples, results)

    def metric_kinds(self) -> dict[str, str]:
        kinds = {m: "continuous" for m in (*ROUGE_METRICS, AVG)}
        for judge in self.settings.judges:
            for key in outcome.win_keys(self.settings.judges, judge.label):
                kinds[key] = "verdict"
        return kinds

    # -- manifest ------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        if self._manifest is not None:
            return self._manifest
        self._manifest = build_manifest(self)
        return self._manifest
