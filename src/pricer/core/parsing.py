"""The one amount parser and the one answer parser: every price Pricer reads from text goes through here.

``parse_amount`` reads a field that states one price (a source record's ``price``, a shop page's
JSON-LD offer, meta tag or ``itemprop``). ``find_price`` reads a price written somewhere in free text
(a language model's answer, frontier or specialist alike; a deal's title). Both share one grammar of
an amount, and these rules:

- **Number**: digits with an optional fraction ("19.99", ".99", "7."); commas only as thousands
  separators in groups of three ("1,299.99"); "12,34" is 12 (the comma ends the number).
- **Currency**: "$", "US$" and "USD" before, "USD", "dollar(s)" and "bucks" after mark an amount as
  dollars. An amount in another currency ("€45", "£3", "45 EUR", "C$20") is no US price: it is skipped.
- **Magnitude**: "k" after a dollar amount multiplies it by 1,000 ("$1.2k" is 1200). A number glued to
  other letters ("4K", "128GB", "3000mAh") is a spec, not an amount; so is a percentage ("30%").
- **Sign**: a price is never negative: "-5", "$-5" and "−5" are no price (None). A dash between two
  numbers is a range ("20-30"), not a sign.
- **Range**: two amounts joined by "-", "–", "—", "to", "and" or "or" ("20-30", "$20 to $30",
  "between 20 and 30") are their midpoint, 25: the estimate that bounds the worst absolute error. When
  the second is lower ("30-20") it is no range: the first amount.
- **Words around**: in free text, the first dollar-marked amount wins ("Model 3000 costs $45" is 45);
  without one, the first amount ("42.00\\n\\nHow much..." is 42), unless the caller requires currency
  (a deal title: "55-Inch TV" states no price). A field (``parse_amount``) must be one amount and
  nothing else: "from $5", "N/A" and "10 - 20" are None.
- **Look-alikes**: only ASCII digits make an amount. Other digits (Arabic-Indic "١٠٠", fullwidth "１００")
  and an amount touching another digit or an invisible character (zero-width space, a bidi override:
  any Unicode format character) are no amount: a page can use them to show one number and state
  another ("$1\\u200b99" looks like $199, "$1٠٠" like $100), so what cannot be read unambiguously is
  not read at all.
- **Free**: "free" is 0.0, in a field, or in free text that holds no amount.
- Numbers given as numbers pass as they are when finite and not negative; booleans, NaN, infinities,
  overflowing digits and anything else are None. Neither parser ever raises.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

_TOKEN = re.compile(
    r"(?P<sign>[-\u2212](?=[$0-9U.]))?"  # a minus only when glued to what follows: "- 5" is a dash
    r"(?P<pre>US\s?\$|USD\s?|\$)?\s?"
    r"(?P<inner_sign>[-\u2212](?=[0-9.]))?"
    # [0-9], not \d: \d also matches every other script's digits, which float() then reads.
    r"(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9,])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?P<k>[kK](?![A-Za-z]))?"
    r"(?P<post>\s?(?:%|USD\b|dollars?\b|bucks\b))?",
    re.IGNORECASE,
)
_FOREIGN_BEFORE = re.compile(r"(?:[€£¥₹]|\b(?:EUR|GBP|JPY|CAD|AUD|INR|CA|AU|C|A))\s?$", re.IGNORECASE)
_FOREIGN_AFTER = re.compile(r"^\s?(?:EUR|GBP|JPY|CAD|AUD|INR|euros?|pounds? sterling)\b", re.IGNORECASE)
_RANGE_JOIN = re.compile(r"\s*(?:-|\u2013|\u2014|to|and|or)\s*", re.IGNORECASE)
_FREE = re.compile(r"\bfree\b", re.IGNORECASE)


def _obscured(char: str) -> bool:
    """A neighbour that makes an amount ambiguous: another script's digit, or an invisible format character."""
    return bool(char) and (char.isnumeric() or unicodedata.category(char) == "Cf")


@dataclass(frozen=True)
class _Amount:
    value: float
    negative: bool
    marked: bool  # written as dollars
    start: int  # where the amount (and a valid sign) begins
    end: int


def _amounts(text: str) -> list[_Amount]:
    found = []
    for match in _TOKEN.finditer(text):
        sign_at = match.start("sign")
        start = match.start("pre") if match.group("pre") else match.start("num")
        # A minus right after a letter or digit joins two things ("20-30"); only a free-standing one is a sign.
        signed = match.group("sign") is not None and (sign_at == 0 or not text[sign_at - 1].isalnum())
        if signed:
            start = sign_at
        before = text[start - 1] if start > 0 else ""
        after = text[match.end()] if match.end() < len(text) else ""
        post = (match.group("post") or "").strip().lower()
        marked = bool(match.group("pre")) or post in ("usd", "dollar", "dollars", "bucks")
        if (before.isalnum() or before == "." or (after.isalpha() and not post) or post == "%"
                or _obscured(before) or _obscured(after)
                or (match.group("k") and not marked) or _FOREIGN_BEFORE.search(text[:start])
                or _FOREIGN_AFTER.match(text[match.end():])):
            continue
        try:
            value = float(match.group("num").replace(",", "")) * (1000.0 if match.group("k") else 1.0)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        negative = signed or match.group("inner_sign") is not None
        found.append(_Amount(value, negative, marked, start, match.end()))
    return found


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) and number >= 0 else None


def parse_amount(value: object) -> float | None:
    """A field that states one price ("$1,299.99", "19", "USD 12.50", 12.5, "free") -> dollars, else None."""
    try:
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return _number(value)
        text = str(value).strip()
        if _FREE.fullmatch(text):
            return 0.0
        amounts = _amounts(text)
        if len(amounts) != 1 or amounts[0].start != 0 or amounts[0].end != len(text) or amounts[0].negative:
            return None
        return amounts[0].value
    except Exception:  # noqa: BLE001 - a parser of untrusted input must never take its caller down
        return None


def find_price(text: object, *, currency_required: bool = False) -> float | None:
    """The price written in free text (a model's answer, a deal title) -> dollars, or None when there is none."""
    try:
        if text is None or isinstance(text, bool):
            return None
        if isinstance(text, int | float):
            return _number(text)
        text = str(text)
        amounts = _amounts(text)
        ranges = {i: amounts[i + 1] for i in range(len(amounts) - 1)
                  if _RANGE_JOIN.fullmatch(text[amounts[i].end:amounts[i + 1].start])}
        marked = [i for i, amount in enumerate(amounts)
                  if amount.marked or (i in ranges and ranges[i].marked)]
        if marked:
            pick = marked[0]
        elif amounts and not currency_required:
            pick = 0
        else:
            return 0.0 if not amounts and not currency_required and _FREE.search(text) else None
        low = amounts[pick]
        high = ranges.get(pick)
        if low.negative:
            return None
        if high is not None and not high.negative and high.value >= low.value:
            return (low.value + high.value) / 2.0
        return low.value
    except Exception:  # noqa: BLE001 - a parser of model output must never take the evaluation down
        return None
