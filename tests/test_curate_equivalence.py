"""The faster curation gives the same outputs: the head-first and the word-by-word token cuts, the
cleaning regexes with their shortcuts, the two prefixes cleaned with their head shared, and curation
in worker processes, each against the plain way it replaced."""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

from tests.test_curate import config_for
from tokenizers import Tokenizer, normalizers
from transformers import PreTrainedTokenizerFast

from pricer.data.config import DemoSourceConfig
from pricer.data.curate import curate
from pricer.data.text import scrub, scrub_prefixes
from pricer.data.tokenizer import HEAD_CHARS_PER_TOKEN, builtin_tokenizer, truncate_to_tokens
from pricer.data.word_cut import word_cutter

_BOILERPLATE = re.compile(
    r"(?i)\b(?:product description|about this item|from the manufacturer|see more product details|"
    r"click here|visit the [\w\s]{1,40} store|make sure this fits by entering your model number\.?)"
)


def plain_scrub(text: str) -> str:
    """Cleaning as it was written first: every regex over every text."""
    text = unicodedata.normalize("NFKC", text).replace("\ufffd", "")
    text = _BOILERPLATE.sub(" ", text)
    text = re.sub(r"\b(?=[\w-]*\d)[\w-]{7,}\b", "", text)
    text = re.sub(r"\s*\n\s*", "\n", re.sub(r"[^\S\n]+", " ", text))
    return re.sub(r"\s+([,.;:!?])", r"\1", text).strip()


def plain_cut(tokenizer, texts: list[str], max_tokens: int) -> tuple[list[str], list[int]]:
    """The cut from one encoding of each whole text."""
    cut, counts = [], []
    for text, encoding in zip(texts, tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)):
        if len(encoding) <= max_tokens:
            cut.append(text)
            counts.append(len(encoding))
        else:
            cut.append(text[: encoding.offsets[max_tokens - 1][1]].rstrip())
            counts.append(max_tokens)
    return cut, counts


PIECES = ["kettle", " Kettle", "  ", "\n", " \n \n", "\t", "\u00a0", "’s", "'ll", "'re", "<pad>", "</s>", "<s>",
          "café", "naïve", "日本語のテキスト", "🙂", "👩‍👩‍👧", "\ufffd", "𝐁𝐎𝐋𝐃", "X100-2000", "AB12345678", "-", "--x9y8z7w6",
          "ﬁ", "İstanbul", "clıck here", "Clİck Here", "ſee more product details", "About This Item", ",", " .",
          " !", "Visit the Acme Kitchen Store", "make sure this fits by entering your model number.", "1.7", "$25",
          "Kelvin: 5K", "\u0301", "e\u0301", "\r\n", "x" * 300, "9" * 50]


def tricky_texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "a", "\n\n", "<pad>" * 200, "word " * 500, "é" * 2000, "🙂" * 700]
    for _ in range(n):
        texts.append("".join(rng.choice(PIECES) + rng.choice(["", " ", "  ", "\n"]) for _ in range(rng.randint(0, 400))))
    return texts


def any_unicode_texts(n: int, seed: int = 7) -> list[str]:
    """Code points from every plane (letters, numbers, marks, spaces, symbols, unassigned ones), the
    surrogates left out: what the word cut must class as the Rust pre-tokenizer does."""
    rng = random.Random(seed)
    planes = [(0x20, 0x7F), (0xA0, 0x3000), (0x3000, 0x30000), (0xE0000, 0x110000)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(0, 900)):
            low, high = rng.choice(planes)
            code = rng.choice([rng.randrange(low, high), 0x20, 0x0A])
            chars.append(chr(code) if not 0xD800 <= code < 0xE000 else " ")
        texts.append("".join(chars))
    return texts


def test_scrub_cleans_exactly_as_the_plain_regexes_do() -> None:
    for text in tricky_texts(600):
        assert scrub(text) == plain_scrub(text), text[:200]


def test_the_head_first_cut_is_the_cut_of_the_whole_text() -> None:
    tokenizer = builtin_tokenizer()
    texts = tricky_texts(400, seed=5)
    for budget in (9, 32, 160):
        # Long enough that the head is shorter than many texts: the head pass is what is tested.
        assert any(len(text) > budget * HEAD_CHARS_PER_TOKEN for text in texts)
        assert truncate_to_tokens(tokenizer, texts, budget) == plain_cut(tokenizer, texts, budget)


def test_the_word_cut_is_the_cut_of_the_rust_tokenizer() -> None:
    tokenizer = builtin_tokenizer()
    cutter = word_cutter(tokenizer)
    assert cutter is not None
    texts = tricky_texts(400, seed=8) + any_unicode_texts(300)
    for budget in (9, 32, 160):
        expected_texts, expected_counts = plain_cut(tokenizer, texts, budget)
        cuts = cutter.cuts(texts, budget)
        # The word cut, where it answers, is the Rust cut; it answers for most texts (the rest hold a
        # special token's text), so the test is of the word cut and not of the fallback.
        assert sum(cut is not None for cut in cuts) > len(texts) / 2
        for text, cut, expected_text, expected_count in zip(texts, cuts, expected_texts, expected_counts):
            if cut is not None:
                count, end = cut
                assert (text if end is None else text[:end].rstrip()) == expected_text, text[:200]
                assert (count if end is None else budget) == expected_count
        assert truncate_to_tokens(tokenizer, texts, budget) == (expected_texts, expected_counts)


def test_the_word_cut_is_left_to_the_rust_tokenizer_where_it_cannot_be_proved() -> None:
    normalized = builtin_tokenizer()
    backend = Tokenizer.from_str(normalized.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Lowercase()  # a normalizer could reach across the words
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert word_cutter(tokenizer) is None
    texts = tricky_texts(100, seed=4)
    assert truncate_to_tokens(tokenizer, texts, 32) == plain_cut(tokenizer, texts, 32)
    # Padding a batched call switched on (a model's generate) would count in a word's tokens.
    padded = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(normalized.backend_tokenizer.to_str()))
    padded.backend_tokenizer.enable_padding(pad_id=0, pad_token="<pad>")
    assert word_cutter(padded) is not None and word_cutter(padded).cuts(texts, 32) == [None] * len(texts)
    assert truncate_to_tokens(padded, texts, 32) == truncate_to_tokens(normalized, texts, 32)


def test_two_prefixes_cleaned_with_their_head_shared_are_each_cleaned_whole() -> None:
    # At the space the head ends at: each punctuation mark that pulls the break back, a part number
    # whose removal leaves a newline beside the space, a combining mark, boilerplate across it.
    at_the_cut = [f"{'lead ' * 3}{mark}{' tail' * 80}" for mark in ",.;:!?"] + [
        f"lead {'x ' * 3}ABC12345\nnext {'tail ' * 80}", f"lead \u0301{'tail ' * 80}",
        f"lead click here {'tail ' * 80}", f"Visit the Acme\nKitchen Store {'tail ' * 80}"]
    for text in at_the_cut:
        for first in range(4, 40):
            assert scrub_prefixes(text, first, 300) == (scrub(text[:first]), scrub(text[:300])), (text[:60], first)
    for text in tricky_texts(400, seed=11) + any_unicode_texts(100, seed=2):
        for first, second in ((960, 2000), (2000, 960), (50, 120), (7, 300), (300, 301), (120, 120)):
            assert scrub_prefixes(text, first, second) == (scrub(text[:first]), scrub(text[:second])), text[:200]


def test_workers_write_the_same_files_as_one_process(tmp_path: Path) -> None:
    source = DemoSourceConfig(n_items=1500, seed=9, malformed_fraction=0.1)
    names = ["curated/train.parquet", "curated/val.parquet", "curated/test.parquet", "quarantine.jsonl"]
    outputs = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        report = curate(config_for(folder, source, workers=workers, batch_size=200, accepted_dir=None))
        outputs[workers] = [(folder / name).read_bytes() for name in names], report
    assert outputs[1] == outputs[2]
    assert outputs[1][1]["kept"] + outputs[1][1]["rejected"] == outputs[1][1]["read"] == 1500
