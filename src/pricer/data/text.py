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
# Whitespace runs that change when collapsed to one space (a lone space is left as it is: fewer
# replacements, the same text) ...
_SPACE = re.compile(r"[^\S\n]{2,}|[^\S \n]")
# ... and, once _SPACE has left only single spaces and newlines, the runs with a newline that are not
# already one newline alone: what ``\s*\n\s*`` -> newline changes.
_NEWLINES = re.compile(r" \n[ \n]*|\n[ \n]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def _may_hold_boilerplate(text: str) -> bool:
    if not text.isascii():
        for letter, ascii_letter in _CASE_FOLDS:  # str.replace, not str.translate: ten times faster here
            text = text.replace(letter, ascii_letter)
    folded = text.lower()
    return any(key in folded for key in _BOILERPLATE_KEYS)


def scrub(text: str) -> str:
    # NFKC folds the "𝐁𝐎𝐋𝐃" letters sellers use into plain ones the tokenizers know.
    text = unicodedata.normalize("NFKC", text).replace("\ufffd", "")
    if _may_hold_boilerplate(text):
        text = _BOILERPLATE.sub(" ", text)
    text = _PART_NUMBER.sub("", text)
    text = _NEWLINES.sub("\n", _SPACE.sub(" ", text))
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text).strip()


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
