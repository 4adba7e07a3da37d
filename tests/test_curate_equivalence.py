"""The faster curation gives the same outputs: the head-first token cut, the cleaning regexes with
their shortcuts, and curation in worker processes, each against the plain way it replaced."""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

from tests.test_curate import config_for

from pricer.data.config import DemoSourceConfig
from pricer.data.curate import curate
from pricer.data.text import scrub
from pricer.data.tokenizer import HEAD_CHARS_PER_TOKEN, builtin_tokenizer, truncate_to_tokens

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
