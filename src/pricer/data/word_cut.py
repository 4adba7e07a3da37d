"""The token cut of byte-level BPE tokenizers (GPT-2's pre-tokenizer) without the Rust pre-tokenizer.

On product text the Rust tokenizer spends nearly all its time in that pre-tokenizer (the GPT-2 regex
in Oniguruma, and a byte-level alignment for every word), not in BPE (``bench/token_cut.py``). A BPE
tokenizes each pre-token (word) on its own, so a text's tokens are its words' tokens in order: here
Python's re splits the words, a cache answers each word's tokens (filled once per new word), and the
cut is counted word by word. The cut is the Rust one exactly:

- Python's re sees what Oniguruma sees: the regex's classes (letter, number, whitespace, other) list
  the characters the tokenizer's own pre-tokenizer puts in each, asked once per character
  (``_CharClasses``), never a Unicode table that could differ.
- A word's tokens are those of the tokenizer's own model on the word's bytes (an ASCII word, whose
  characters are its bytes), or of the whole Rust tokenizer on the word alone (any other word), kept
  only where it takes the word as one pre-token.
- A text that holds an added (special) token's content, a word refused above, or a character no
  class fits gets ``None``: the caller cuts that text the Rust way.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate, chain
from operator import attrgetter

from tokenizers import Tokenizer, pre_tokenizers
from transformers import PreTrainedTokenizerBase

# Where a word's tokens end (characters, from the word's start); None where the word is no one
# pre-token on its own. Cleared when full, so memory stays flat over any stream.
WordEnds = list[int] | None
WORD_CACHE_LIMIT = 1 << 17
# How much of a text is split into words first, in characters a token: at the start this, then a
# little more than nearly all the cuts so far needed (``_HEAD_QUANTILE``), so that the head is short
# (3.3 on Amazon's text, 4.0 on the demo's with the builtin tokenizer) and nearly every cut falls
# inside it; the texts it misses are split again whole. The outputs are the same for any head.
START_CHARS_PER_TOKEN = 4.0
_HEAD_QUANTILE, _HEAD_MARGIN, _HEAD_SAMPLE = 0.99, 0.25, 200
# The regex's longest lookahead past a word's end (``'re`` tried at a quote): a word ending closer
# than this to the end of a head that is not the whole text might be another word in the whole text.
_LOOKAHEAD = 3

# A character joins the word of its class's probe, and only that one's.
_PROBES = {"letter": "a", "number": "0", "other": "!", "space": "\t"}


def _charset(chars: list[str], negated: bool = False) -> str:
    return "[" + "^" * negated + "".join(f"\\U{ord(char):08x}" for char in chars) + "]"


class _CharClasses:
    """Each character's class as the tokenizer's pre-tokenizer gives it (ASCII from the start, the rest
    when first met), and the GPT-2 regex over exactly the characters classed so far.

    Every class is a list of the characters in it, none a complement, so a character not classed yet
    matches nothing: the words then fall short of the text, which is how one is noticed (``learn``).
    """

    def __init__(self, pre_tokenizer: pre_tokenizers.PreTokenizer) -> None:
        self._pre_tokenizer = pre_tokenizer
        self._members: dict[str, list[str]] = {name: [] for name in _PROBES}
        self._unclassed: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.learn({chr(code) for code in range(128)})
        if not self._unclassed and all(self.class_of(probe) == name
                                       for name, probe in [*_PROBES.items(), ("space", " ")]):
            self.pattern = self._compile()

    def class_of(self, char: str) -> str | None:
        for name, probe in _PROBES.items():
            try:
                if len(self._pre_tokenizer.pre_tokenize_str(probe + char)) == 1:
                    return name
            except UnicodeEncodeError:  # a lone surrogate: the Rust side cannot take it, so neither can this
                return None
        return None

    def learn(self, chars: set[str]) -> None:
        """Class the characters not met before; one that fits no class sends its texts the Rust way."""
        new = chars.difference(*self._members.values(), self._unclassed)
        for char in sorted(new):
            name = self.class_of(char)
            if name is None:
                self._unclassed.add(char)
            else:
                self._members[name].append(char)
        if new and self.pattern is not None:
            self.pattern = self._compile()

    def _compile(self) -> re.Pattern[str]:
        letter, number, other, space = map(_charset, self._members.values())
        not_space = _charset(self._members["space"], negated=True)
        return re.compile(f"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?{other}+|{space}+(?!{not_space})|{space}+")


class _Unclassed:
    """Words split before each character of the text was classed."""


_UNCLASSED = _Unclassed()


class WordCutter:
    """Cuts texts at their ``max_tokens``-th token as the given byte-level BPE tokenizer does."""

    def __init__(self, backend: Tokenizer, classes: _CharClasses) -> None:
        self._backend = backend
        self._classes = classes
        self._added = [token.content for token in backend.get_added_tokens_decoder().values() if token.content]
        self._words: dict[str, WordEnds] = {}
        self._chars_per_token = START_CHARS_PER_TOKEN
        # ASCII as the byte-level pre-tokenizer maps it (one character a byte) for the model alone.
        bytes_only = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self._byte_chars = str.maketrans({code: bytes_only.pre_tokenize_str(chr(code))[0][0] for code in range(128)})

    def cuts(self, texts: list[str], max_tokens: int) -> list[tuple[int, int | None] | None]:
        """Per text: its token count and, over the budget, where its last kept token ends; None where
        this cannot prove the cut (the caller asks the Rust tokenizer)."""
        if self._backend.padding is not None or self._backend.truncation is not None:
            # Switched on since (a model's batched generate): they would count in the words' tokens.
            return [None] * len(texts)
        head = round(max_tokens * self._chars_per_token)
        cuts = self._cuts(texts, max_tokens, head)
        longer = [i for i, cut in enumerate(cuts) if cut is None and len(texts[i]) > head]
        for i, cut in zip(longer, self._cuts([texts[i] for i in longer], max_tokens, None), strict=True):
            cuts[i] = cut
        needed = sorted(cut[1] / max_tokens for cut in cuts if cut is not None and cut[1] is not None)
        if len(needed) >= _HEAD_SAMPLE:
            self._chars_per_token = needed[int(_HEAD_QUANTILE * (len(needed) - 1))] + _HEAD_MARGIN
        return cuts

    def _cuts(self, texts: list[str], max_tokens: int, head: int | None) -> list[tuple[int, int | None] | None]:
        heads = [text[:head] for text in texts]
        split = [self._words_of(text) for text in heads]
        unclassed = [i for i, words in enumerate(split) if words is _UNCLASSED]
        if unclassed:
            self._classes.learn(set().union(*(heads[i] for i in unclassed)))
            for i in unclassed:
                split[i] = self._words_of(heads[i])
        ready = [None if words is _UNCLASSED else words for words in split]
        self._learn(set(chain.from_iterable(words for words in ready if words is not None)))
        return [None if words is None else self._cut(words, max_tokens, head is None or len(text) <= head)
                for text, words in zip(texts, ready, strict=True)]

    def _words_of(self, text: str) -> list[str] | _Unclassed | None:
        if any(added in text for added in self._added):
            return None
        assert self._classes.pattern is not None, "a cutter is made only with a pattern"
        words = self._classes.pattern.findall(text)
        # A character not classed yet is in no word: the words then fall short of the text.
        return words if text.isascii() or sum(map(len, words)) == len(text) else _UNCLASSED

    def _learn(self, words: set[str]) -> None:
        """Make sure the cache holds every word of a batch."""
        new = words.difference(self._words)  # walks the words, not the cache as ``- dict.keys()`` would
        if len(self._words) + len(new) > WORD_CACHE_LIMIT:
            self._words.clear()
            new = words
        # An ASCII word goes to the model alone, a quarter of the cost of an Encoding: its characters
        # are its bytes, so the tokens' lengths are their offsets. Others go the whole way, and are
        # kept only where the tokenizer takes them as one pre-token.
        tokenize, value = self._backend.model.tokenize, attrgetter("value")
        others = []
        for word in new:
            if word.isascii():
                self._words[word] = list(accumulate(map(len, map(value, tokenize(word.translate(self._byte_chars))))))
            else:
                others.append(word)
        for word, encoding in zip(others, self._backend.encode_batch(others, add_special_tokens=False), strict=True):
            alone = len(encoding) > 0 and encoding.token_to_word(len(encoding) - 1) == 0
            self._words[word] = [end for _, end in encoding.offsets] if alone else None

    def _cut(self, words: list[str], max_tokens: int, whole: bool) -> tuple[int, int | None] | None:
        starts = [0, *accumulate(map(len, words))]
        if not whole:  # the words ending too near the head's end might be others in the whole text
            words = words[:max(0, bisect_right(starts, starts[-1] - _LOOKAHEAD) - 1)]
        ends = list(map(self._words.__getitem__, words))
        if None in ends:
            return None
        counts = list(accumulate(map(len, ends)))  # tokens up to and with each word
        over = bisect_right(counts, max_tokens)  # the first word that takes the count past the budget
        if over == len(counts):
            return (counts[-1] if counts else 0, None) if whole else None
        kept = max_tokens - (counts[over - 1] if over else 0)  # its tokens that are kept
        if kept:
            return max_tokens + 1, starts[over] + ends[over][kept - 1]
        return max_tokens + 1, starts[over - 1] + ends[over - 1][-1]


@lru_cache(maxsize=8)
def word_cutter(tokenizer: PreTrainedTokenizerBase) -> WordCutter | None:
    """The tokenizer's cutter, or None where its cut cannot be taken word by word: no GPT-2 byte-level
    pre-tokenizer, a normalizer that reaches across words, a model that is not deterministic (BPE
    dropout), or a class test the pre-tokenizer fails. (Padding and truncation, which a batched call
    can switch on at any time, are checked at each call.)"""
    backend = tokenizer.backend_tokenizer
    pre = backend.pre_tokenizer
    if not (isinstance(pre, pre_tokenizers.ByteLevel) and pre.use_regex and not pre.add_prefix_space
            and backend.normalizer is None and getattr(backend.model, "dropout", None) is None):
        return None
    classes = _CharClasses(pre)
    return None if classes.pattern is None else WordCutter(backend, classes)
