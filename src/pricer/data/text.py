"""Product text: assemble title/features/description/details, strip boilerplate and part numbers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from pricer.data.records import Product

# The most text a price model reads: a deal's cap too, so training and serving see alike lengths.
# The curated ``text`` is cut far shorter, to the language models' token budget; ``full_text`` keeps
# the description that budget drops, which the traditional models price better with.
FULL_TEXT_CHARS = 2000

# Details that say nothing about the price but cost tokens (or leak source-specific ids).
_SKIPPED_DETAILS = frozenset(
    {
        "Best Sellers Rank", "Customer Reviews", "Date First Available", "Item model number",
        "Manufacturer", "Part Number", "ASIN", "UPC", "Batteries Included?", "Batteries Required?",
        "Discontinued By Manufacturer", "Is Discontinued By Manufacturer", "Original Price",
        "Original Currency", "Original Price String", "Country of Origin",
    }
)
_BOILERPLATE = re.compile(
    r"(?i)\b(?:product description|about this item|from the manufacturer|see more product details|"
    r"click here|visit the [\w\s]{1,40} store|make sure this fits by entering your model number\.?)"
)
# Literal text every _BOILERPLATE match holds: a text with none of it is left alone, without the
# regex's case-insensitive scan of every position (the most of cleaning's time on product text).
_BOILERPLATE_KEYS = ("product description", "about this item", "from the manufacturer", "see more product details",
                     "click here", "visit the ", "make sure this fits by entering your model number")
# The letters that (?i) matches to ASCII ones but str.lower() does not lower to them (measured over
# all of Unicode); with them folded first, the keys test never misses a match of the regex.
_CASE_FOLDS = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"))
# The course's scrub: words of 7+ characters holding a digit are part numbers, not meaning. The
# first lookahead only fails short words early; it matches nothing the rest would not.
_PART_NUMBER = re.compile(r"\b(?=[\w-]{7})(?=[\w-]*\d)[\w-]{7,}\b")
# Punctuation that the space or newline before it is dropped from. Once whitespace is collapsed
# (``_collapse_whitespace``), a run of it is one space or one newline.
_PULLED_BACK = ",.;:!?"
_SPACE_BEFORE_PUNCT = re.compile(rf"[ \n]([{re.escape(_PULLED_BACK)}])")


def _may_hold_boilerplate(text: str) -> bool:
    if not text.isascii():
        for letter, ascii_letter in _CASE_FOLDS:  # str.replace, not str.translate: ten times faster here
            text = text.replace(letter, ascii_letter)
    folded = text.lower()
    return any(key in folded for key in _BOILERPLATE_KEYS)


def _collapse_whitespace(text: str) -> str:
    """Each run of whitespace as one newline if it holds one, else as one space; none at either end.
    The regexes ``[^\\S\\n]+`` -> space, then ``\\s*\\n\\s*`` -> newline, in str methods: a third of their time."""
    return "\n".join(filter(None, [" ".join(line.split()) for line in text.split("\n")]))


def _normalized(text: str) -> str:
    # NFKC folds the "𝐁𝐎𝐋𝐃" letters sellers use into plain ones the tokenizers know.
    return unicodedata.normalize("NFKC", text).replace("\ufffd", "")


def _unfolded(normalized: str) -> str:
    """Boilerplate and part numbers out, whitespace still as it was."""
    if _may_hold_boilerplate(normalized):
        normalized = _BOILERPLATE.sub(" ", normalized)
    return _PART_NUMBER.sub("", normalized)


def _folded(unfolded: str) -> str:
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _collapse_whitespace(unfolded))


def scrub(text: str) -> str:
    return _folded(_unfolded(_normalized(text)))


def scrub_prefixes(text: str, first: int, second: int) -> tuple[str, str]:
    """``scrub(text[:first])`` and ``scrub(text[:second])``, the part they share cleaned once.

    The shared part ends at a space: NFKC composes nothing across one, no part number spans one, and
    the whitespace run around it folds to a newline if it holds one and to a space if not, so each
    text is the head and its tail cleaned apart, then joined by that character (or by nothing, where
    the tail starts with the punctuation ``_PULLED_BACK``). Boilerplate is the one
    rule that can span the space: where either text may hold some, both are cleaned whole.
    """
    shorter = min(first, second)
    if len(text) <= shorter:
        cleaned = scrub(text)
        return cleaned, cleaned
    cut = text.rfind(" ", 0, shorter)
    if cut > 0:
        head, tails = _normalized(text[:cut]), [_normalized(text[cut:end]) for end in (first, second)]
        if not any(_may_hold_boilerplate(head + tail) for tail in tails):
            head = _PART_NUMBER.sub("", head)
            newline_before = "\n" in head[len(head.rstrip()):]
            first_text, second_text = (_joined(_folded(head), newline_before, _PART_NUMBER.sub("", tail))
                                       for tail in tails)
            return first_text, second_text
    return scrub(text[:first]), scrub(text[:second])


def _joined(head: str, newline_before: bool, tail: str) -> str:
    """A cleaned head and an unfolded tail that starts at the space it was cut at."""
    newline = newline_before or "\n" in tail[: len(tail) - len(tail.lstrip())]
    tail = _folded(tail)
    if not head or not tail:
        return head or tail
    return head + tail if tail[0] in _PULLED_BACK else head + ("\n" if newline else " ") + tail


def _detail_line(key: str, value: Any) -> str | None:
    if key in _SKIPPED_DETAILS or value is None or isinstance(value, Mapping | list):
        return None
    value = str(value).strip()
    return f"{key}: {value}" if value else None


def details_line(details: Mapping[str, Any]) -> str:
    """The compact details as one line (``Brand: Acme; Weight: 2 pounds``), uninformative keys left out."""
    return "; ".join(filter(None, (_detail_line(str(k), v) for k, v in details.items())))


def raw_text(product: Product) -> str:
    """Title, the compact details (brand, weight, size: strong price signals that a long description
    would push past the token budget), features, description; not yet cleaned."""
    parts = [product.title, details_line(product.details), *product.features, *product.description]
    return "\n".join(part for part in parts if part)


def product_text(product: Product, max_chars: int | None = None) -> str:
    """The cleaned text a model prices. ``max_chars`` cuts the raw text first: cleaning only
    shortens text, and most descriptions run far past any token budget."""
    return scrub(raw_text(product)[:max_chars])
