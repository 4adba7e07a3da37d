"""The one amount parser and the one answer parser, table-driven; the frontier, the specialist, curation
and the scanner all read prices through them."""

from __future__ import annotations

import math

import pytest

from fake_openai import FakeOpenAI
from pricer.core.parsing import find_price, parse_amount

# (text a model answered, the price read from it)
ANSWERS = [
    # numbers and their separators
    ("42.00", 42.0),
    ("132.00</s>", 132.0),
    ("  129.99\n\nHow much does 7 cost", 129.99),  # the first number: the model ran on
    ("1,999", 1999.0),
    ("1,299,000.50 dollars", 1299000.5),
    ("12,34", 12.0),  # not a thousands group: the comma ends the number
    (".99", 0.99),
    ("7.", 7.0),
    ("0", 0.0),
    # currency and words around the number
    ("Price is $1,299.99", 1299.99),
    ("$ 12.50", 12.5),
    ("USD 12.99", 12.99),
    ("12.99 USD", 12.99),
    ("It costs about 30 dollars.", 30.0),
    ("Model 3000 sells for $45.00", 45.0),  # a dollar amount wins over a bare number
    ("128GB for $59", 59.0),
    ("$1.2k", 1200.0),
    ("4K", None),  # a spec, not an amount
    ("30% off", None),
    ("€45", None),  # another currency is no US price
    ("45 EUR", None),
    ("C$20", None),
    ("£3.50 or $5", 5.0),
    # ranges: the midpoint
    ("20-30", 25.0),
    ("20 - 30", 25.0),
    ("20 – 40", 30.0),
    ("$20 to $30", 25.0),
    ("between 20 and 30", 25.0),
    ("30-20", 30.0),  # the second is lower: no range, the first amount
    # signs: a price is never negative
    ("-5", None),
    ("$-5", None),
    ("−5", None),
    # free, nothing, garbage
    ("Free", 0.0),
    ("Free shipping, $45", 45.0),
    ("I'm sorry, I can't tell.", None),
    ("N/A", None),
    ("", None),
    ("$", None),
    ("...", None),
    ("9" * 400, None),  # overflows to infinity
    (None, None),
    (7, 7.0),
    (float("nan"), None),
    (float("inf"), None),
    (True, None),
]

# (a field that states one price, the price)
FIELDS = [
    (12.5, 12.5),
    ("$1,299.99", 1299.99),
    ("19", 19.0),
    ("USD 12.50", 12.5),
    ("$1.2k", 1200.0),
    ("free", 0.0),
    ("10 - 20", None),  # a range is not one price
    ("from $5", None),  # nor are words around one
    ("1.2k", None),
    ("1,29", None),
    ("-5", None),
    (-5.0, None),
    ("N/A", None),
    ("", None),
    (None, None),
    (float("nan"), None),
    ([3], None),
    (True, None),
]


def _same(value: float | None, expected: float | None) -> bool:
    return value is None if expected is None else value is not None and math.isclose(value, expected)


@pytest.mark.parametrize(("answer", "expected"), ANSWERS, ids=[repr(a)[:30] for a, _ in ANSWERS])
def test_answers(answer: object, expected: float | None) -> None:
    assert _same(find_price(answer), expected)


@pytest.mark.parametrize(("field", "expected"), FIELDS, ids=[repr(f)[:30] for f, _ in FIELDS])
def test_fields(field: object, expected: float | None) -> None:
    assert _same(parse_amount(field), expected)


def test_a_deal_title_states_a_price_only_with_a_currency() -> None:
    assert find_price("55-Inch 4K TV for $299.99 today", currency_required=True) == 299.99
    assert find_price("55-Inch TV, 2 Pack", currency_required=True) is None
    assert find_price("FREE Echo Dot", currency_required=True) is None


@pytest.mark.parametrize("words", ["20-30", "Price is $1,299.99", "-5", "about 30 dollars", "$1.2k"])
def test_the_frontier_and_the_specialist_read_the_same_words_as_the_same_price(
    words: str, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from pricer.core.config import validate
    from pricer.frontier.client import FrontierClient
    from pricer.frontier.config import FrontierConfig
    from pricer.llm.inference import GenerationPredictor

    with FakeOpenAI(answer_for=lambda messages, model: words) as server:
        config = validate(FrontierConfig, {"name": "fake", "model": "gpt-fake", "base_url": server.base_url,
                                           "api_key_env": None, "cache_dir": None, "cost_log": None,
                                           "trace": False})
        frontier = FrontierClient(config).price_texts(["a product"])[0]
    # The specialist's own reading of its generated continuation, with the model's output fixed.
    monkeypatch.setattr(GenerationPredictor, "generate", lambda self, prompts, batch_size=None: [words] * len(prompts))
    specialist = GenerationPredictor.__call__(object.__new__(GenerationPredictor), ["a prompt"])[0]
    assert _same(frontier, specialist) and _same(frontier, find_price(words))
