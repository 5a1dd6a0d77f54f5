"""Estimated cost of model calls: a small dated price table, overridable with `--price`.

Prices are USD per million tokens, OpenAI's standard (not Batch API) list prices for uncached
input, as published at https://openai.com/api/pricing/ (and the model pages of
platform.openai.com/docs/models) on 2024-10-01. Undated aliases (gpt-4o-mini, gpt-3.5-turbo,
gpt-4) are priced as the snapshot they pointed to on that date; the bare `gpt-4o` alias is left
out on purpose: it moved from the 2024-05-13 snapshot to the 2024-08-06 one, at half the price,
so its cost depends on when the run was made. Prices change: a user who pays another price
passes `--price MODEL=IN,OUT`, and a model not in the table has no estimate (None), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rolebench_eval.errors import UsageError
from rolebench_eval.requests import ChatRequest

PRICES_AS_OF = "2024-10-01"
PRICES_SOURCE = "https://openai.com/api/pricing/ (standard tier, uncached input)"


@dataclass(frozen=True)
class Price:
    input_per_million: float  # USD per million prompt tokens
    output_per_million: float  # USD per million completion tokens
    source: str = f"list price, {PRICES_SOURCE}, {PRICES_AS_OF}"


def _list(inp: float, out: float) -> Price:
    return Price(inp, out)


DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o-2024-05-13": _list(5.00, 15.00),  # PersonaGym's judge
    "gpt-4o-2024-08-06": _list(2.50, 10.00),  # OpenCharacter's judge
    "gpt-4o-mini": _list(0.15, 0.60),
    "gpt-4o-mini-2024-07-18": _list(0.15, 0.60),
    "gpt-3.5-turbo": _list(0.50, 1.50),  # alias of gpt-3.5-turbo-0125 since 2024-02
    "gpt-3.5-turbo-0125": _list(0.50, 1.50),
    "gpt-4": _list(30.00, 60.00),  # alias of gpt-4-0613
    "gpt-4-0613": _list(30.00, 60.00),
}

_FORMAT = (
    "expected MODEL=IN,OUT in USD per million input and output tokens, "
    "e.g. --price gpt-4o-2024-08-06=2.50,10.00"
)


def parse_price(text: str) -> tuple[str, Price]:
    """Parse one `--price MODEL=IN,OUT`; a one-line UsageError on anything else."""
    model, sep, values = text.rpartition("=")
    model = model.strip()
    if not sep or not model:
        raise UsageError(f"--price {text!r}: {_FORMAT}")
    parts = values.split(",")
    if len(parts) != 2:
        raise UsageError(f"--price {text!r}: {_FORMAT}")
    numbers = []
    for part, what in zip(parts, ("input", "output")):
        try:
            number = float(part)
        except ValueError:
            raise UsageError(f"--price {text!r}: {what} price {part.strip()!r} is not a number; {_FORMAT}") from None
        if not math.isfinite(number) or number < 0:
            raise UsageError(f"--price {text!r}: {what} price must be a finite number >= 0, got {part.strip()!r}")
        numbers.append(number)
    return model, Price(numbers[0], numbers[1], source="--price (user override)")


def price_table(overrides: Iterable[str] = ()) -> dict[str, Price]:
    """The default table with every `--price` applied; naming one model twice is an error."""
    table = dict(DEFAULT_PRICES)
    seen: set[str] = set()
    for text in overrides:
        model, price = parse_price(text)
        if model in seen:
            raise UsageError(f"--price {text!r}: model {model!r} is priced twice")
        seen.add(model)
        table[model] = price
    return table


def estimate_cost(
    model: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    prices: Mapping[str, Price] | None = None,
) -> float | None:
    """Estimated USD for these tokens, or None when the price or a token count is unknown
    (a server that reports no usage): an unknown cost is never shown as 0."""
    price = (DEFAULT_PRICES if prices is None else prices).get(model)
    if price is None or prompt_tokens is None or completion_tokens is None:
        return None
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens}, {completion_tokens}")
    return (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1e6


# Backends whose model name is an API model that may have a list price. Local engines (hf, vllm,
# lm-eval) have none: their cost is the machine's, not a per-token price.
PRICED_BACKENDS = frozenset({"openai"})


def price_for(backend: str, model: str, prices: Mapping[str, Price] | None = None) -> Price | None:
    """The price of `ModelSpec.model` served by `backend`, or None ("no price", never $0)."""
    if backend not in PRICED_BACKENDS:
        return None
    return (DEFAULT_PRICES if prices is None else prices).get(model)


class PriceBook:
    """Which model each label of a run stands for, and its price: the one registry the call tally
    and the budget both read."""

    def __init__(self, prices: Mapping[str, Price] | None = None):
        self.prices = prices
        self._models: dict[str, tuple[str, str]] = {}

    def register(self, label: str, backend: str, model: str) -> None:
        """Say which model a label stands for (`ModelSpec.backend`, `ModelSpec.model`)."""
        self._models[label] = (backend, model)

    def model_of(self, label: str, default: tuple[str, str] = ("", "")) -> tuple[str, str]:
        return self._models.get(label, default)

    def price_of(self, label: str) -> tuple[str, Price] | None:
        """(model name, price) of a label, or None: a local or unregistered model has no price."""
        backend, model = self.model_of(label)
        price = price_for(backend, model, self.prices)
        return (model, price) if price is not None else None


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A deliberately high estimate of a request's prompt tokens from its text alone (no tokenizer):
    a third of a token per ASCII character (English BPE averages about a quarter), one token per
    other character (CJK text is about one per character), and 4 tokens per message plus 3 for the
    chat format's framing (OpenAI's documented overhead)."""
    tokens = 3
    for message in request.messages:
        text = message.content
        ascii_chars = sum(1 for ch in text if ord(ch) < 128)
        tokens += 4 + math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)
    return tokens
