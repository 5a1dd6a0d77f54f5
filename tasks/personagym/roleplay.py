"""Named role-play system prompts for the model under test, with their generation settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleplayTemplate:
    name: str
    system: str  # str.format template with {persona}
    temperature: float
    top_p: float | None
    max_tokens: int
    source: str


TEMPLATES: dict[str, RoleplayTemplate] = {
    "personagym": RoleplayTemplate(
        name="personagym",
        system=(
            "Adopt the identity of {persona}. Answer the questions while staying in strict "
            "accordance with the nature of this identity."
        ),
        temperature=0.9,
        top_p=0.9,
        max_tokens=3000,
        source="PersonaGym reference code (also the GPT rows of OpenCharacter's tables)",
    ),
    "opencharacter": RoleplayTemplate(
        name="opencharacter",
        system=(
            "You are an AI character with the following Persona.\n\n# Persona\n{persona}\n\n"
            "Please stay in your character and keep in compliance with the above Persona and "
            "Character Profile. Be helpful and harmless to the user's requests."
        ),
        temperature=0.9,
        top_p=None,
        max_tokens=1024,
        source="OpenCharacter paper, prompt of its fine-tuned models",
    ),
}
