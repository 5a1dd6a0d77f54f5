"""Render chat messages with a model's chat template, never dropping a system message silently.

lm-eval and others drop the system message when a template rejects it, which deletes the persona
of a role-play prompt. Here the caller chooses by a named policy, recorded in the run:
- "fail":  stop with an error naming the model and the template;
- "merge": put the system text at the top of the first user turn, and note it on the completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.errors import BackendError
from rolebench_eval.requests import Message

SYSTEM_POLICIES = ("fail", "merge")
MERGED_NOTE = "system message merged into the first user turn (system_prompt_policy=merge)"


def load_chat_template(path: str | None) -> str | None:
    """Read a `--chat-template` file (Jinja text)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise BackendError(f"--chat-template: file not found: {path}")
    return file.read_text(encoding="utf-8")


def merge_system_into_user(messages: Sequence[Message]) -> list[Message]:
    """Fold the system message(s) into the first user message, keeping their order."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return list(rest)
    for i, message in enumerate(rest):
        if message.role == "user":
            rest[i] = Message("user", f"{system}\n\n{message.content}")
            return rest
    return [Message("user", system), *rest]


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def render_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    system_prompt_policy: str = "fail",
    chat_template: str | None = None,
    model_name: str = "model",
) -> tuple[str, tuple[str, ...]]:
    """Return (prompt text, notes) for a generation prompt.

    A template that raises on the system role, or renders without the system text (silently
    dropping it), is handled by `system_prompt_policy`.
    """
    if system_prompt_policy not in SYSTEM_POLICIES:
        raise BackendError(
            f"unknown system prompt policy {system_prompt_policy!r}; use one of {SYSTEM_POLICIES}"
        )
    has_system = any(m.role == "system" for m in messages)
    problem = None
    try:
        text = tokenizer.apply_chat_template(
            _as_dicts(messages),
            tokenize=False,
            add_generation_prompt=True,
            chat_template=chat_template,
        )
        if has_system and not all(
            m.content.strip() in text for m in messages if m.role == "system" and m.content.strip()
        ):
            problem = "its chat template renders the conversation without the system message"
        else:
            return text, ()
    except Exception as exc:  # jinja2 TemplateError, ValueError: templates raise what they like
        if not has_system:
            raise BackendError(f"{model_name}: chat template failed: {exc}") from exc
        problem = f"its chat template rejects the system message ({exc})"
    if system_prompt_policy == "fail":
        raise BackendError(
            f"{model_name}: {problem}. Rerun with --system-prompt-policy merge to put the "
            "system text at the top of the first user turn (recorded in the run), or pass a "
            "--chat-template that supports a system role."
        )
    merged = merge_system_into_user(messages)
    try:
        text = tokenizer.apply_chat_template(
            _as_dicts(merged), tokenize=False, add_generation_prompt=True, chat_template=chat_template
        )
    except Exception as exc:  # e.g. a template that also demands strict user/assistant turns
        raise BackendError(
            f"{model_name}: {problem}, and the merged conversation fails too: {exc}"
        ) from exc
    return text, (MERGED_NOTE,)
