"""PingPong v2's data and requests, as the reference pipeline (run_eval_v2.py, run_judge.py) builds them.

- The interrogator (simulated user, USER_ROLE) gets a system message (interrogator_system.jinja) and
  one user message (interrogator_user.jinja) holding the character's summary, the situation and the
  conversation so far; it replies with JSON `{"next_utterance": ...}`. Sampling 0.8 / 0.95, 1024
  tokens.
- The player (the model under test) gets the character card (en_/ru_character.jinja) as its system
  message, then the conversation as alternating user / assistant messages. Sampling: the reference
  provider's defaults, 0.6 / 0.9, 1536 tokens.
- Each judge gets judge_system.jinja and judge_user.jinja (character card and the whole
  conversation) once per dialogue and replies with JSON scores for every player turn. Sampling
  0.1 / 0.95, 4096 tokens.

Templates are rendered as the reference does (`jinja2.Template(text).render(...).strip()`), and
every reply is normalised as its `generate` does (strip, then each double space made single)
before it is parsed or put into a later prompt, so the requests are byte-identical to the
reference's for the same replies. No seed is sent (the reference sends none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from rolebench_eval.backends.fingerprint import file_sha256
from rolebench_eval.errors import DataError
from rolebench_eval.requests import ChatRequest, GenerationParams, Message

DATA = Path(__file__).resolve().parent / "data"
SETTINGS_FILE = "settings_v2.json"
SOURCE = "IlyaGusev/ping_pong_bench@4e3b0e0b6b093670f67b80d7d62b5a5e8e7b13fd"

INTERROGATOR_PARAMS = GenerationParams(temperature=0.8, top_p=0.95, max_tokens=1024)
PLAYER_PARAMS = GenerationParams(temperature=0.6, top_p=0.9, max_tokens=1536)
JUDGE_PARAMS = GenerationParams(temperature=0.1, top_p=0.95, max_tokens=4096)

ChatMessages = list[dict[str, str]]


@dataclass(frozen=True)
class Character:
    index: int
    char_name: str
    system_prompt: str
    example_prompt: str | None
    initial_message: str | None
    summary: str | None
    tags: tuple[str, ...]

    def template_fields(self) -> dict[str, Any]:
        return {
            "char_name": self.char_name,
            "system_prompt": self.system_prompt,
            "example_prompt": self.example_prompt,
            "initial_message": self.initial_message,
            "summary": self.summary,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class Situation:
    index: int
    text: str
    num_turns: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    language: str
    version: int
    characters: tuple[Character, ...]
    situations: tuple[Situation, ...]
    templates: dict[str, str]  # "interrogator_system", ... -> path relative to DATA


_TEMPLATE_KEYS = {
    "interrogator_system": "interrogator_system_prompt_path",
    "interrogator_user": "interrogator_user_prompt_path",
    "judge_system": "judge_system_prompt_path",
    "judge_user": "judge_user_prompt_path",
    "character": "character_prompt_path",
}


def load_settings(language: str, path: Path = DATA / SETTINGS_FILE) -> Settings:
    """The characters and situations of one language, as settings_v2.json lists them."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))[language]
        characters = tuple(
            Character(
                index=i,
                char_name=c["char_name"],
                system_prompt=c["system_prompt"],
                example_prompt=c.get("example_prompt"),
                initial_message=c.get("initial_message"),
                summary=c.get("summary"),
                tags=tuple(c.get("tags") or ()),
            )
            for i, c in enumerate(data["characters"])
        )
        situations = tuple(
            Situation(index=i, text=s["text"], num_turns=int(s.get("num_turns", 4)), tags=tuple(s.get("tags") or ()))
            for i, s in enumerate(data["situations"])
        )
        templates = {name: str(data[key]) for name, key in _TEMPLATE_KEYS.items()}
        version = int(data["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read PingPong settings for {language!r}: {exc}") from exc
    return Settings(language, version, characters, situations, templates)


@cache
def _template(relative: str) -> jinja2.Template:
    return jinja2.Template((DATA / relative).read_text(encoding="utf-8"))


def render(relative: str, **fields: Any) -> str:
    """A template rendered as the reference's `encode_prompt` renders it."""
    return _template(relative).render(**fields).strip()


def template_hashes(settings: Settings) -> dict[str, str]:
    return {settings.templates[name]: file_sha256(DATA / settings.templates[name]) for name in _TEMPLATE_KEYS}


def normalise_reply(text: str) -> str:
    """A reply as the reference's `generate` returns it: stripped, double spaces made single
    (one pass of str.replace, as there: four spaces become two)."""
    return text.strip().replace("  ", " ")


def character_card(settings: Settings, character: Character) -> str:
    return render(settings.templates["character"], character=character.template_fields())


def interrogator_request(
    settings: Settings, character: Character, situation: Situation, messages: ChatMessages,
    params: GenerationParams = INTERROGATOR_PARAMS,
) -> ChatRequest:
    user = render(
        settings.templates["interrogator_user"],
        char_summary=character.summary,
        situation=situation.text,
        messages=messages,
    )
    return ChatRequest(
        (Message("system", render(settings.templates["interrogator_system"])), Message("user", user)), params
    )


def player_request(
    settings: Settings, character: Character, messages: ChatMessages, params: GenerationParams = PLAYER_PARAMS
) -> ChatRequest:
    history = tuple(Message(m["role"], m["content"]) for m in messages)  # type: ignore[arg-type]
    return ChatRequest((Message("system", character_card(settings, character)), *history), params)


def judge_request(
    settings: Settings, character: Character, situation: Situation, messages: ChatMessages,
    params: GenerationParams = JUDGE_PARAMS,
) -> ChatRequest:
    user = render(
        settings.templates["judge_user"],
        char_description=character_card(settings, character),
        situation=situation.text,
        messages=messages,
    )
    return ChatRequest((Message("system", render(settings.templates["judge_system"])), Message("user", user)), params)
