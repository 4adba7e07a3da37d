"""Where the token cut's time goes: the Rust tokenizer's pipeline against the word-by-word cut.

    python bench/token_cut.py                          # 5,000 real amazon_us texts
    python bench/token_cut.py --data ../shared/data/other_retailers.jsonl.gz --n 3000

The texts are what curation's cut sees: each record's text cleaned (``scrub``) and cut to
``max_tokens x 6`` characters. With the curation tokenizer (``tokenizer`` in ``CurateConfig``'s
defaults), in CPU seconds of this process, the fastest of ``--repeat`` runs (the Rust calls run on one
thread here, so CPU time and wall time agree and the figures add up):

* the whole Rust pipeline on every text (``encode_batch``), and its GPT-2 pre-tokenizer alone
  (``pre_tokenize_str`` a text at a time): close to the pipeline's whole time, so BPE is not where it
  goes (the pre-tokenizer's figure also holds the cost of handing every word to Python: an upper bound);
* the Rust cut curation took before the word cut (``_rust_cuts``: one batched call over each text's
  head, the whole text again where the head cannot prove the cut);
* the word cut (``pricer.data.word_cut``), cold (a new cutter, its word cache empty) and warm (the same
  texts again), and how many texts it left to the Rust cut.

Every cut is checked against the plain one (the whole text's encoding); exit status 1 if one differs,
2 when the data file is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One thread for the Rust side, set before tokenizers loads: CPU time is then the work itself.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def texts_of(data: Path, n: int) -> tuple[list[str], int]:
    from pricer.data.config import CurateConfig, JsonlSourceConfig
    from pricer.data.prepare import CHARS_PER_TOKEN_CEILING
    from pricer.data.records import Product, decode_line, parse_record
    from pricer.data.sources import read_source
    from pricer.data.text import raw_text, scrub

    config = CurateConfig(source=JsonlSourceConfig(paths=[data]))
    cut = config.max_tokens * CHARS_PER_TOKEN_CEILING
    texts = []
    for origin, raw in read_source(config.source):
        record = decode_line(raw, origin) if isinstance(raw, bytes | str) else raw
        product = parse_record(record, origin, config.max_raw_chars)
        if isinstance(product, Product):
            texts.append(scrub(raw_text(product)[:cut]))
        if len(texts) == n:
            break
    return texts, config.max_tokens


def cpu_seconds(work: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The least CPU time of ``repeat`` runs (the others lost time to the machine), and the result."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        result = work()
        times.append(time.process_time() - started)
    return min(times), result


def cold_cut(tokenizer: Any, texts: list[str], budget: int) -> Any:
    from pricer.data.tokenizer import truncate_to_tokens
    from pricer.data.word_cut import word_cutter

    word_cutter.cache_clear()  # a new cutter: its word cache and character classes start empty
    return truncate_to_tokens(tokenizer, texts, budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/amazon_us.jsonl.gz"))
    parser.add_argument("--n", type=int, default=5000, help="texts to cut")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, the fastest counted")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"{args.data}: no such file (the real products live in ../shared/data)", file=sys.stderr)
        sys.exit(2)

    from pricer.data.config import CurateConfig
    from pricer.data.tokenizer import _rust_cuts, load_tokenizer, truncate_to_tokens
    from pricer.data.word_cut import word_cutter

    texts, budget = texts_of(args.data, args.n)
    tokenizer = load_tokenizer(CurateConfig().tokenizer)
    backend = tokenizer.backend_tokenizer
    print(f"{len(texts):,} texts from {args.data} (mean {sum(map(len, texts)) / len(texts):.0f} characters), "
          f"budget {budget} tokens, tokenizer {type(backend.model).__name__}")
    for text in texts[:50]:  # the first calls load what each path needs; not timed
        backend.pre_tokenizer.pre_tokenize_str(text)
    backend.encode_batch(texts[:50], add_special_tokens=False)

    repeat = args.repeat
    pipeline_s, encodings = cpu_seconds(lambda: backend.encode_batch(texts, add_special_tokens=False), repeat)
    pre_s, _ = cpu_seconds(lambda: [backend.pre_tokenizer.pre_tokenize_str(text) for text in texts], repeat)
    rust_s, _ = cpu_seconds(lambda: _rust_cuts(backend, texts, budget), repeat)
    cold_s, cold = cpu_seconds(lambda: cold_cut(tokenizer, texts, budget), repeat)
    warm_s, warm = cpu_seconds(lambda: truncate_to_tokens(tokenizer, texts, budget), repeat)
    cutter = word_cutter(tokenizer)
    left = sum(cut is None for cut in cutter.cuts(texts, budget)) if cutter is not None else len(texts)

    plain = ([text if len(e) <= budget else text[: e.offsets[budget - 1][1]].rstrip()
              for text, e in zip(texts, encodings, strict=True)], [min(len(e), budget) for e in encodings])
    per_text = 1e6 / len(texts)
    print(f"Rust pipeline, whole texts:   {pipeline_s:6.2f} CPU s  ({pipeline_s * per_text:5.0f} us a text)")
    print(f"  its pre-tokenizer alone:    {pre_s:6.2f} CPU s  ({pre_s / pipeline_s:.2f}x the pipeline, "
          "its words turned into Python objects included)")
    print(f"Rust cut (head first):        {rust_s:6.2f} CPU s  ({rust_s * per_text:5.0f} us a text)")
    print(f"word cut, cold cache:         {cold_s:6.2f} CPU s  ({cold_s * per_text:5.0f} us a text, "
          f"{rust_s / cold_s:.1f}x the Rust cut)")
    print(f"word cut, warm cache:         {warm_s:6.2f} CPU s  ({warm_s * per_text:5.0f} us a text, "
          f"{rust_s / warm_s:.1f}x the Rust cut); {left:,} texts left to the Rust cut")
    if cutter is None:
        print("this tokenizer is cut the Rust way alone (not a byte-level BPE one)")
    same = cold == warm == plain
    print("every cut equal to the whole text's encoding" if same else "a cut DIFFERS from the whole text's encoding")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
