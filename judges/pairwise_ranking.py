"""RoleLLM ranking judge, used pairwise for the win rate against the RoleGPT baseline.

Prompt templates (names are recorded with every result):

- `rolellm-ranking-en`: the paper's system and user prompts, byte-exact.
- `rolellm-ranking-zh-v1`: this harness's faithful Chinese translation of the same prompt (the
  paper's own Chinese version was not published). The JSON-like format line stays in English
  keys so the same parser applies.

Rendering (`RENDERING = "python-repr-v1"`): `{question_dict}` is `str({"question": q})` (with a
`"reference answer"` key added when a reference is passed); `{list_model_answer_dict}` is
`str([{"model": "model_1", "response": first}, {"model": "model_2", "response": second}])`.
The names are anonymous and fixed by position, so the judge never sees which is the baseline.
Placeholders are filled in one regex pass: the template's literal braces (the format line) and
braces inside answers are never interpreted.

Order policies (`ORDER_POLICIES`):

- `both-orders` (default): judge (model, baseline) and (baseline, model). Both agree -> that
  verdict; they disagree -> tie, counted as inconsistent; either unparsed -> unscored.
- `random-order`: one judgment, the model's position drawn with `random.Random(f"{seed}:{item_id}")`
  (stable across runs and processes).

Missing role description (`MISSING_DESCRIPTION_POLICIES`): `omit-sentence` (default) drops the
sentence 'The role description of "X" is "...".'; `empty-description` keeps it with "". Either
way the builder returns a warning for the run to log and record.

Judge parameters: temperature 0, max_tokens 1024 (`JUDGE_PARAMS`).
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rolebench_eval.errors import unknown
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message

RENDERING = "python-repr-v1"
ORDER_POLICIES: tuple[str, ...] = ("both-orders", "random-order")
MISSING_DESCRIPTION_POLICIES: tuple[str, ...] = ("omit-sentence", "empty-description")
ANONYMOUS_NAMES: tuple[str, str] = ("model_1", "model_2")
# Rankings with reasons for two answers fit comfortably; a cut-off reply would be unparsed.
JUDGE_PARAMS = GenerationParams(temperature=0.0, max_tokens=1024)

SYSTEM_EN = (
    "You are a role-playing performance comparison assistant. You should rank the models based "
    "on the role characteristics and text quality of their responses. The rankings are then "
    "output using Python dictionaries and lists."
)
USER_EN = (
    'The models below are to play the role of "{role_name}". The role description of '
    '"{role_name}" is "{role_description_and_catchphrases}". I need to rank the following models '
    "based on the two criteria below:\n"
    "1. Which one has more pronounced role speaking style, and speaks more in line with the role "
    "description. The more distinctive the speaking style, the better.\n"
    "2. Which one's output contains more knowledge and memories related to the role; the richer, "
    "the better. (If the question contains reference answers, then the role-specific knowledge "
    "and memories are based on the reference answer.)\n"
    "The question provided to each model is:\n"
    "{question_dict}\n"
    "The respective answers from the models to this question are:\n"
    "{list_model_answer_dict}\n"
    "Now, based on the above two criteria, please rank the models. Avoid any positional biases "
    "and ensure that the order in which the responses are presented does not influence your "
    "decision. Do not favor certain model names.\n"
    "Then, use a list containing the model's name, its rank, and the reason for its ranking to "
    "return the results, i.e., please ensure to use the following format to return the results:\n"
    '[{"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}, {"model": '
    '<model-name>, "reason": <rank-reason>, "rank": <model-rank>}]\n'
    "Your answer must be a valid Python list of dictionaries to ensure I can directly parse it "
    "using Python. Do not include any extraneous content! Please provide a ranking that is as "
    "accurate as possible and aligns with the intuition of most people."
)
SYSTEM_ZH = (
    "你是一个角色扮演表现比较助手。你需要根据模型回复的角色特征和文本质量对模型进行排名。"
    "然后使用Python字典和列表输出排名结果。"
)
USER_ZH = (
    '下面的模型要扮演"{role_name}"这个角色。"{role_name}"的角色描述是'
    '"{role_description_and_catchphrases}"。我需要根据以下两个标准对下面的模型进行排名：\n'
    "1. 哪一个的角色说话风格更鲜明，说话更符合角色描述。说话风格越有特色越好。\n"
    "2. 哪一个的输出包含更多与角色相关的知识和记忆；越丰富越好。"
    "（如果问题中包含参考答案，那么角色相关的知识和记忆以参考答案为准。）\n"
    "提供给每个模型的问题是：\n"
    "{question_dict}\n"
    "各个模型对这个问题的回答分别是：\n"
    "{list_model_answer_dict}\n"
    "现在，请根据以上两个标准对模型进行排名。避免任何位置偏见，确保回答的呈现顺序不会影响你的判断。"
    "不要偏袒某些模型名称。\n"
    "然后，用一个包含模型名称、排名以及排名理由的列表返回结果，即请确保使用以下格式返回结果：\n"
    '[{"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}, {"model": '
    '<model-name>, "reason": <rank-reason>, "rank": <model-rank>}]\n'
    "你的回答必须是一个合法的Python字典列表，以确保我可以直接用Python解析它。不要包含任何多余的内容！"
    "请给出尽可能准确、符合大多数人直觉的排名。"
)
TEMPLATES: dict[str, tuple[str, str]] = {
    "rolellm-ranking-en": (SYSTEM_EN, USER_EN),
    "rolellm-ranking-zh-v1": (SYSTEM_ZH, USER_ZH),
}
TEMPLATE_FOR_LANGUAGE = {"en": "rolellm-ranking-en", "zh": "rolellm-ranking-zh-v1"}
# The sentence `omit-sentence` removes when the description is unknown.
_DESCRIPTION_SENTENCE = {
    "rolellm-ranking-en": ' The role description of "{role_name}" is "{role_description_and_catchphrases}".',
    "rolellm-ranking-zh-v1": '"{role_name}"的角色描述是"{role_description_and_catchphrases}"。',
}
_PLACEHOLDER = re.compile(
    r"\{(role_name|role_description_and_catchphrases|question_dict|list_model_answer_dict)\}"
)

Outcome = Literal["win", "loss", "tie", "unparsed"]
ItemOutcome = Literal["win", "loss", "tie", "unscored"]
Order = Literal["model-first", "baseline-first"]


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill the four named placeholders in one pass; every other brace stays literal."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def question_dict(question: str, reference: str | None = None) -> str:
    data = {"question": question}
    if reference is not None:
        data["reference answer"] = reference
    return str(data)


def answers_list(first: str, second: str) -> str:
    return str(
        [
            {"model": ANONYMOUS_NAMES[0], "response": first},
            {"model": ANONYMOUS_NAMES[1], "response": second},
        ]
    )


def build_ranking_messages(
    role: str,
    description: str | None,
    question: str,
    first_answer: str,
    second_answer: str,
    *,
    template: str = "rolellm-ranking-en",
    reference: str | None = None,
    missing_description: str = "omit-sentence",
) -> tuple[tuple[Message, Message], str | None]:
    """(system, user) messages for one ordering, and a warning when the description is unknown."""
    if template not in TEMPLATES:
        raise unknown("judge template", template, TEMPLATES)
    if missing_description not in MISSING_DESCRIPTION_POLICIES:
        raise unknown(
            "missing-description policy", missing_description, MISSING_DESCRIPTION_POLICIES
        )
    system, user = TEMPLATES[template]
    warning = None
    if description is None:
        warning = (
            f"no role description for {role!r}: judge prompt built with missing-description "
            f"policy {missing_description!r} (template {template!r})"
        )
        if missing_description == "omit-sentence":
            user = user.replace(_DESCRIPTION_SENTENCE[template], "", 1)
    values = {
        "role_name": role,
        "role_description_and_catchphrases": description or "",
        "question_dict": question_dict(question, reference),
        "list_model_answer_dict": answers_list(first_answer, second_answer),
    }
    return (Message("system", system), Message("user", render_template(user, values))), warning


@dataclass(frozen=True)
class RankingRequest:
    """One judge call: which order it shows, and the anonymous name the model has in it."""

    order: Order
    model_label: str
    request: ChatRequest


def build_ranking_requests(
    item_id: str,
    role: str,
    description: str | None,
    question: str,
    model_answer: str,
    baseline_answer: str,
    *,
    policy: str = "both-orders",
    seed: int = 0,
    template: str = "rolellm-ranking-en",
    reference: str | None = None,
    missing_description: str = "omit-sentence",
    params: GenerationParams = JUDGE_PARAMS,
) -> tuple[tuple[RankingRequest, ...], str | None]:
    """The judge calls one item needs under the order policy, and the description warning."""
    if policy not in ORDER_POLICIES:
        raise unknown("order policy", policy, ORDER_POLICIES)
    if policy == "both-orders":
        orders: list[Order] = ["model-first", "baseline-first"]
    else:
        draw = random.Random(f"{seed}:{item_id}").random()
        orders = ["model-first" if draw < 0.5 else "baseline-first"]
    requests, warning = [], None
    for order in orders:
        pair = (model_answer, baseline_answer)
        if order == "baseline-first":
            pair = (baseline_answer, model_answer)
        messages, warning = build_ranking_messages(
            role, description, question, *pair, template=template, reference=reference,
            missing_description=missing_description,
        )
        label = ANONYMOUS_NAMES[0] if order == "model-first" else ANONYMOUS_NAMES[1]
        requests.append(RankingRequest(order, label, ChatRequest(messages, params)))
    return tuple(requests), warning


@dataclass(frozen=True)
class Verdict:
    """The model's result in one judgment; `reason` says why when unparsed."""

    outcome: Outcome
    reason: str | None = None


_FENCE = re.compile(r"```[A-Za-z0-9_-]*")


def _find_list(text: str) -> list[Any] | None:
    """The whole reply as a literal, else the first [...] block that parses as a list.

    A list of dicts is preferred over an earlier list of something else (e.g. "[1]" in prose).
    """
    stripped = _FENCE.sub("", text).strip()
    fallback: list[Any] | None = None
    for value in _literal_lists(stripped):
        if value and all(isinstance(e, dict) for e in value):
            return value
        fallback = value if fallback is None else fallback
    return fallback


def _literal_lists(text: str) -> Iterable[list[Any]]:
    candidates = [text]
    # Every "[" start and every later "]" end, in order: a "]" inside a reason string ends an
    # early, unparseable candidate and the search moves on. Capped: replies are short, but an
    # adversarial one must not make this quadratic in practice.
    starts = list(_positions(text, "[", 0))[:20]
    for start in starts:
        candidates += [text[start : end + 1] for end in list(_positions(text, "]", start))[:50]]
    for candidate in candidates:
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, list):
            yield value


def _positions(text: str, char: str, start: int) -> Iterable[int]:
    index = text.find(char, start)
    while index != -1:
        yield index
        index = text.find(char, index + 1)


def _canonical_name(name: Any) -> str:
    # "Model 1", "model-1" and "model_1" all name the same anonymous answer.
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _rank(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*#?\s*(\d+)\s*(st|nd|rd|th)?\s*\.?\s*", value, re.IGNORECASE)
        if match:
            return int(match.group(1))
    return None


def parse_ranking(reply: str, model_label: str) -> Verdict:
    """The model's verdict from one judge reply, where the model was shown as `model_label`."""
    if model_label not in ANONYMOUS_NAMES:
        raise ValueError(f"model_label must be one of {ANONYMOUS_NAMES}, got {model_label!r}")
    ranking = _find_list(reply)
    if ranking is None:
        return Verdict("unparsed", "no Python list found in the reply")
    wanted = {_canonical_name(n): n for n in ANONYMOUS_NAMES}
    ranks: dict[str, int] = {}
    for entry in ranking:
        if not isinstance(entry, dict) or "model" not in entry or "rank" not in entry:
            return Verdict("unparsed", "list entry without 'model' and 'rank'")
        name = wanted.get(_canonical_name(entry["model"]))
        if name is None:
            return Verdict("unparsed", f"unknown model name {entry['model']!r}")
        if name in ranks:
            return Verdict("unparsed", f"model {name} ranked twice")
        rank = _rank(entry["rank"])
        if rank is None:
            return Verdict("unparsed", f"rank {entry['rank']!r} is not an integer")
        ranks[name] = rank
    if len(ranks) != 2:
        return Verdict("unparsed", f"ranking covers {sorted(ranks)} instead of both models")
    other = ANONYMOUS_NAMES[1] if model_label == ANONYMOUS_NAMES[0] else ANONYMOUS_NAMES[0]
    if ranks[model_label] == ranks[other]:
        return Verdict("tie")
    return Verdict("win" if ranks[model_label] < ranks[other] else "loss")


def reply_check(text: str) -> str | None:
    """The runner's content check of a ranking reply (ModelCall.check): why it gives no verdict.

    A reply without a parseable ranking is a failed call, asked again and never a verdict. Which
    anonymous name the model had does not change whether a reply parses, only its outcome.
    """
    verdict = parse_ranking(text, ANONYMOUS_NAMES[0])
    return f"no parseable ranking: {verdict.reason}" if verdict.outcome == "unparsed" else None


def verdict_from_completion(completion: Completion, model_label: str) -> Verdict:
    """Like parse_ranking, but a failed judge call is unparsed, never a score."""
    if not completion.ok or completion.text is None:
        return Verdict("unparsed", f"judge call failed: {completion.error}")
    return parse_ranking(completion.text, model_label)


@dataclass(frozen=True)
class ItemVerdict:
    outcome: ItemOutcome
    inconsistent: bool = False  # both orders judged and disagreed
    reason: str | None = None  # why unscored


def combine_orders(model_first: Verdict, baseline_first: Verdict) -> ItemVerdict:
    """Both-orders rule: agree -> that verdict; disagree -> tie, flagged inconsistent; any
    unparsed -> unscored with the order and reason."""
    for order, verdict in (("model-first", model_first), ("baseline-first", baseline_first)):
        if verdict.outcome == "unparsed":
            return ItemVerdict("unscored", reason=f"{order}: {verdict.reason}")
    if model_first.outcome == baseline_first.outcome:
        return ItemVerdict(model_first.outcome)  # type: ignore[arg-type]  # not "unparsed" here
    return ItemVerdict("tie", inconsistent=True)


def single_order(verdict: Verdict) -> ItemVerdict:
    """Random-order rule: the one judgment is the item's verdict."""
    if verdict.outcome == "unparsed":
        return ItemVerdict("unscored", reason=verdict.reason)
    return ItemVerdict(verdict.outcome)


@dataclass(frozen=True)
class WinRateSummary:
    n: int  # scored items
    wins: int
    ties: int
    losses: int
    win_rate: float | None  # wins / n
    tie_adjusted_win_rate: float | None  # (wins + 0.5 ties) / n
    inconsistent: int
    inconsistent_share: float | None  # inconsistent / n
    n_unscored: int
    unscored_reasons: dict[str, int] = field(default_factory=dict)
    n_skipped_no_baseline: int = 0


def aggregate(verdicts: Sequence[ItemVerdict], n_skipped_no_baseline: int = 0) -> WinRateSummary:
    """Win rate over scored items; unscored and baseline-less items are counted, not scored."""
    counts = Counter(v.outcome for v in verdicts)
    n = counts["win"] + counts["tie"] + counts["loss"]
    inconsistent = sum(1 for v in verdicts if v.inconsistent)
    reasons = Counter(v.reason or "unknown" for v in verdicts if v.outcome == "unscored")
    return WinRateSummary(
        n=n,
        wins=counts["win"],
        ties=counts["tie"],
        losses=counts["loss"],
        win_rate=counts["win"] / n if n else None,
        tie_adjusted_win_rate=(counts["win"] + 0.5 * counts["tie"]) / n if n else None,
        inconsistent=inconsistent,
        inconsistent_share=inconsistent / n if n else None,
        n_unscored=counts["unscored"],
        unscored_reasons=dict(reasons),
        n_skipped_no_baseline=n_skipped_no_baseline,
    )
