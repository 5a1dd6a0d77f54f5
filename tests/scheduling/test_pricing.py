"""Cost estimates: the dated price table, `--price` overrides, unknown costs stay unknown."""

from __future__ import annotations

import pytest

from rolebench_eval.errors import EXIT_USAGE, UsageError
from rolebench_eval.scheduling.pricing import PRICES_AS_OF, Price, estimate_cost, parse_price, price_table


def test_list_prices_of_the_papers_judges() -> None:
    # 1M prompt + 100k completion tokens at 2.50 / 10.00 USD per million
    assert estimate_cost("gpt-4o-2024-08-06", 1_000_000, 100_000) == pytest.approx(3.50)
    assert estimate_cost("gpt-4o-2024-05-13", 2_000, 1_000) == pytest.approx(0.025)
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert estimate_cost("gpt-3.5-turbo", 1_000_000, 0) == pytest.approx(0.50)
    assert estimate_cost("gpt-4", 0, 1_000_000) == pytest.approx(60.0)
    assert PRICES_AS_OF == "2024-10-01"


def test_unknown_is_none_never_zero() -> None:
    assert estimate_cost("my-local-model", 1000, 1000) is None
    assert estimate_cost("gpt-4o", 1000, 1000) is None  # an alias whose price moved over time
    assert estimate_cost("gpt-4o-2024-08-06", None, 1000) is None  # server reported no usage
    assert estimate_cost("gpt-4o-2024-08-06", 0, 0) == 0.0  # known price, no tokens: truly 0
    with pytest.raises(ValueError):
        estimate_cost("gpt-4", -1, 0)


def test_price_overrides() -> None:
    table = price_table(["my-model=1,2", "gpt-4o-2024-08-06=1.25,5.00", "ns:model=a=0.5,0.5"])
    assert estimate_cost("my-model", 1_000_000, 500_000, table) == pytest.approx(2.0)
    assert estimate_cost("gpt-4o-2024-08-06", 1_000_000, 0, table) == pytest.approx(1.25)
    assert table["ns:model=a"] == Price(0.5, 0.5, source="--price (user override)")
    assert estimate_cost("gpt-4", 0, 1_000_000, table) == pytest.approx(60.0)  # defaults kept


@pytest.mark.parametrize(
    "text, words",
    [
        ("gpt-4", "expected MODEL=IN,OUT"),
        ("=1,2", "expected MODEL=IN,OUT"),
        ("m=1", "expected MODEL=IN,OUT"),
        ("m=1,2,3", "expected MODEL=IN,OUT"),
        ("m=one,2", "input price 'one' is not a number"),
        ("m=1,-2", "output price must be a finite number >= 0"),
        ("m=inf,2", "input price must be a finite number >= 0"),
    ],
)
def test_bad_price_is_a_one_line_usage_error(text: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_price(text)
    message = str(info.value)
    assert words in message and f"--price {text!r}" in message and "\n" not in message
    assert info.value.exit_code == EXIT_USAGE


def test_a_model_priced_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="priced twice"):
        price_table(["m=1,2", "m=3,4"])
