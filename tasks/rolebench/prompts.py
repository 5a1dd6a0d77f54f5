"""The RoleLLM role-play system instruction (RoleGPT / RoCIT), English and Chinese.

The two templates are byte-exact copies of the paper's prompts (note the curly apostrophe in
"Don’t" and the full-width punctuation in Chinese); their names are what a run records.

A missing role description is a known gap of the shipped data (no `profiles-*/desc.json`), so the
caller chooses, by name, what the prompt says instead, and always gets a warning back to log and
to record in the manifest. Policies:

- `omit-clause` (default): drop the description clause entirely ("You are X. Now please ...",
  "你是X。现在请你..."). Chosen because an empty clause ("your description is: .") is visibly
  broken text that models tend to comment on, which would add noise unrelated to role-play.
- `empty-description`: keep the template as is with an empty description.
"""

from __future__ import annotations

from rolebench_eval.errors import unknown
from rolebench_eval.requests import Message

# Byte-exact from the protocol (RoleLLM paper, appendix); {role_name} / {role_description} are
# the only placeholders and are filled with str.replace, never str.format, so braces inside
# descriptions cannot break rendering.
ROLELLM_EN = (
    "You are {role_name}, your description is: {role_description}. Now please answer some "
    "questions to accurately show your personality traits! Your speaking style should fully "
    "imitate the personality role assigned to you! Please do not expose that you are an "
    "artificial intelligence model or a language model, you must always remember that you are "
    "only assigned one personality role. Don\u2019t be verbose or too formal or polite when "
    "speaking."
)
ROLELLM_ZH = (
    "你是{role_name}，你的特征描述是：{role_description}。现在请你回答我的一些问题，以准确展现你的人格特征！"
    "你的说话风格要全面模仿被赋予的人格角色！请不要暴露你是人工智能模型或者语言模型，"
    "你要时刻记住你只被赋予的一个人格角色。说话不要嗦，也不要太过于正式或礼貌。"
)

# The clause each policy removes for `omit-clause`, and what replaces it.
_DESCRIPTION_CLAUSE = {
    "rolellm-en": (", your description is: {role_description}.", "."),
    "rolellm-zh": ("，你的特征描述是：{role_description}。", "。"),
}

TEMPLATES: dict[str, str] = {"rolellm-en": ROLELLM_EN, "rolellm-zh": ROLELLM_ZH}
TEMPLATE_FOR_LANGUAGE: dict[str, str] = {"en": "rolellm-en", "zh": "rolellm-zh"}
MISSING_DESCRIPTION_POLICIES: tuple[str, ...] = ("omit-clause", "empty-description")
DEFAULT_MISSING_DESCRIPTION_POLICY = "omit-clause"


def render_system_prompt(
    role: str,
    description: str | None,
    *,
    template: str = "rolellm-en",
    missing_description: str = DEFAULT_MISSING_DESCRIPTION_POLICY,
) -> str:
    """The system message for `role`; `description=None` applies the named missing policy."""
    if template not in TEMPLATES:
        raise unknown("prompt template", template, TEMPLATES)
    if missing_description not in MISSING_DESCRIPTION_POLICIES:
        raise unknown(
            "missing-description policy", missing_description, MISSING_DESCRIPTION_POLICIES
        )
    text = TEMPLATES[template]
    if description is None and missing_description == "omit-clause":
        clause, replacement = _DESCRIPTION_CLAUSE[template]
        text = text.replace(clause, replacement, 1)
    # Role first, description last: a description that happens to contain "{role_name}" stays
    # literal instead of being substituted a second time.
    text = text.replace("{role_name}", role, 1)
    return text.replace("{role_description}", description or "", 1)


def build_role_messages(
    role: str,
    question: str,
    description: str | None,
    *,
    template: str = "rolellm-en",
    missing_description: str = DEFAULT_MISSING_DESCRIPTION_POLICY,
) -> tuple[tuple[Message, ...], str | None]:
    """(system + user messages, warning or None). The question is sent exactly as in the data.

    The warning is returned rather than logged so the runner can both print it and record it
    (with the policy name) in the run manifest.
    """
    system = render_system_prompt(
        role, description, template=template, missing_description=missing_description
    )
    warning = None
    if description is None:
        warning = (
            f"no role description for {role!r}: system prompt built with missing-description "
            f"policy {missing_description!r} (template {template!r})"
        )
    return (Message("system", system), Message("user", question)), warning


# -- guided judge output (--judge-output guided) ----------------------------------------------
# RoleLLM's ranking list as the judge prompt's format line asks for it
# (`[{"model": <model-name>, "reason": <rank-reason>, "rank": <model-rank>}, ...]`), as a regex a
# constrained decoder follows: both anonymous models exactly once, each with a reason (a string
# literal without quotes or backslashes, so it always evaluates) and a rank 1 or 2. Any reply it
# matches gives a verdict under `judges.pairwise_ranking.parse_ranking` (win, loss or tie). It is
# written in the subset that Python `re`, llguidance and vLLM all read.
_REASON_CHARS_PER_TOKEN = 1  # the most tokens ASCII text can take (English averages about 4)
_RANKING_OVERHEAD_TOKENS = 40  # the list's keys, names, ranks and punctuation


def _ranking_entry(name: str, reason_limit: int) -> str:
    return (
        rf'\{{"model": "{name}", "reason": "[^"\\\n\r]{{0,{reason_limit}}}", "rank": [12]\}}'
    )


def ranking_regex(names: tuple[str, str], max_tokens: int) -> str:
    """The ranking reply for the two anonymous `names` (in either order), within `max_tokens`."""
    reason_limit = max(16, (max_tokens - _RANKING_OVERHEAD_TOKENS) // 2 * _REASON_CHARS_PER_TOKEN)
    first, second = (_ranking_entry(n, reason_limit) for n in names)
    in_order = rf"\[{first}, {second}\]"
    swapped = rf"\[{second}, {first}\]"
    return rf"(?:{in_order}|{swapped})"
