"""Pricing with a causal LM: batched greedy generation, read by the project's one answer parser
(``pricer.core.parsing.find_price``), and a probability-weighted estimator. Both predictors map
prompts to prices (None when the answer has no usable number).

Batched generation pads on the LEFT: every row's last prompt token then sits in the same
column, so the next-token logits of all rows are read at one position and new tokens are
appended after real text, not after padding. Prompts are also sorted by length inside a call
(and the answers put back in order), so a batch holds prompts of similar length and little
compute is spent on padding. With greedy decoding and an attention mask, a batched answer is
the same as the one-at-a-time answer (tests check it).

Decoding stops early: a row is finished as soon as the number it is writing is complete (a
digit followed by anything but a digit or a thousands comma, or by a decimal point and its two
cents), and the batch stops when every row is finished or ``max_new_tokens`` is reached.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from functools import lru_cache

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from pricer.core.parsing import find_price

log = logging.getLogger(__name__)

# After a digit: anything but a digit, a comma or a point ends the number; so does ".dd".
_NUMBER_DONE = re.compile(r"\d(?:[^\d,.]|\.\d\d|\.[^\d]|,[^\d])")


# --- batched greedy generation ----------------------------------------------------------------


class _PriceComplete(StoppingCriteria):
    """Per-row stop: the answer holds a complete number (see the module docstring)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        answers = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=False)
        done = [bool(_NUMBER_DONE.search(answer)) for answer in answers]
        return torch.tensor(done, device=input_ids.device)


def _sorted_batches(
    prompts: Sequence[str], tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> list[list[int]]:
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda index: lengths[index])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


class GenerationPredictor:
    """Greedy answers for a list of prompts, in left-padded batches; ``__call__`` parses prices."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 16,
        max_new_tokens: int = 6,
        stop_early: bool = True,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop_early = stop_early
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def generate(self, prompts: Sequence[str], batch_size: int | None = None) -> list[str]:
        """The decoded continuation of every prompt (special tokens removed), in input order."""
        answers: list[str] = [""] * len(prompts)
        for batch in _sorted_batches(prompts, self.tokenizer, batch_size or self.batch_size):
            for index, answer in zip(batch, self._generate_batch([prompts[i] for i in batch]), strict=True):
                answers[index] = answer
        return answers

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str]) -> list[str]:
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(_device(self.model))
        width = encoded["input_ids"].shape[1]
        stopping = StoppingCriteriaList([_PriceComplete(self.tokenizer, width)]) if self.stop_early else None
        output = self.model.generate(
            **encoded,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            stopping_criteria=stopping,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)

    def __call__(self, prompts: Sequence[str]) -> list[float | None]:
        return [find_price(answer) for answer in self.generate(list(prompts))]


# --- the probability-weighted estimator -------------------------------------------------------


@lru_cache(maxsize=8)
def _integer_tokens_cached(
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    ids, values, widths = [], [], []
    pieces = tokenizer.batch_decode([[token_id] for token_id in range(len(tokenizer))])
    for token_id, piece in enumerate(pieces):
        # Pure integers only, without a space or sign; "07" is not how a price starts, "0" is.
        if piece.isascii() and piece.isdigit() and (piece == "0" or not piece.startswith("0")):
            ids.append(token_id)
            values.append(int(piece))
            widths.append(len(piece))
    return tuple(ids), tuple(values), tuple(widths)


def integer_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int], list[int]]:
    """(token ids, their integer values, their digit counts) of the tokens that decode to an integer."""
    ids, values, widths = _integer_tokens_cached(tokenizer)
    return list(ids), list(values), list(widths)


class ExpectedPricePredictor:
    """A probability-weighted price from the model's distribution over integer tokens.

    At the answer's first position the next-token distribution is restricted to the tokens that
    decode to a pure integer ("7", "42", "199"; not " 7", "7.", "07"), renormalised, and
    averaged: E[price] = sum_t p(t) * int(t). When the tokenizer writes every price below
    $1000 as ONE token (Llama 3 has a token for each of 0-999), that is the whole estimate and
    costs a single forward pass over the prompt (``max_new_tokens=1``); curation caps prices
    below $1000, so nothing is lost.

    Multi-token prices (Gemma, Qwen and the builtin tokenizer write one digit per token; Llama 3
    splits 1299 into "129" + "9") are read chunk by chunk along a path constrained to the price
    grammar: the first token is the most likely integer token; after it the number goes on
    while the model puts at least half of its probability on another integer token or a
    thousands comma (the most likely of those is taken), and ends otherwise. Each chunk on that
    path is replaced by its expected value among the integer tokens of the same width (so the
    order of magnitude stays the path's), conditioned on the chunks before it:

        price = sum_i E[chunk_i | path chunks < i] * 10 ** (digits after chunk i)

    Each chunk after the first costs one cached decoding step (one token per row), and a number
    ends after ``max_digits`` digits (4: curated prices are below $1000). The answer is always a
    number: unlike free generation, the estimator cannot be unparseable.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 16,
        max_digits: int = 4,
    ) -> None:
        ids, values, widths = integer_tokens(tokenizer)
        if not ids:
            raise ValueError("the tokenizer has no token that decodes to an integer")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_digits = max_digits
        device = _device(model)
        self.ids = torch.tensor(ids, device=device)
        self.values = torch.tensor(values, dtype=torch.float64, device=device)
        self.widths = torch.tensor(widths, device=device)
        self.single_step = set(range(1000)) <= set(values)  # every price below $1000 is one token
        comma = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(","))
        comma = [token for token in comma if token is not None]
        self.comma_ids = torch.tensor(comma[:1] if len(comma) == 1 else [], dtype=torch.long, device=device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = tokenizer.eos_token_id
        self.stop_id = eos if eos is not None else tokenizer.pad_token_id
        self._column = {token: column for column, token in enumerate(ids)}
        # Digits written by each token id (0 for anything that is not an integer token).
        self.digits_of = torch.zeros(max(len(tokenizer), max(ids) + 1), dtype=torch.long, device=device)
        self.digits_of[self.ids] = self.widths

    def __call__(self, prompts: Sequence[str]) -> list[float | None]:
        prices: list[float | None] = [None] * len(prompts)
        for batch in _sorted_batches(prompts, self.tokenizer, self.batch_size):
            for index, price in zip(batch, self._estimate_batch([prompts[i] for i in batch]), strict=True):
                prices[index] = price
        return prices

    @torch.inference_mode()
    def _estimate_batch(self, prompts: list[str]) -> list[float | None]:
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(_device(self.model))
        width = encoded["input_ids"].shape[1]
        # One step per digit at most, a thousands comma, and the step that ends the number.
        steps = 1 if self.single_step else self.max_digits + 2
        output = self.model.generate(
            **encoded,
            max_new_tokens=steps,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=LogitsProcessorList([_PriceGrammar(self, width)]),
            stopping_criteria=StoppingCriteriaList([_NumberEnded(self)]),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.stop_id,
            output_logits=True,  # the raw logits, before the grammar's masking
            return_dict_in_generate=True,
        )
        chosen = output.sequences[:, width:]
        logits = torch.stack(output.logits, dim=1)  # batch x steps x vocab
        return [self._weighted(chosen[row], logits[row]) for row in range(len(prompts))]

    def _weighted(self, chosen: torch.Tensor, logits: torch.Tensor) -> float | None:
        comma_ids = set(self.comma_ids.tolist())
        value, chunks = 0.0, 0
        for step in range(chosen.shape[0]):
            token = int(chosen[step])
            column = self._column.get(token)
            if column is None:
                if token in comma_ids and chunks:
                    continue
                break
            same_width = self.widths == self.widths[column]
            probs = torch.softmax(logits[step, self.ids].double(), dim=-1) * same_width
            total = float(probs.sum())
            if not total > 0:
                break
            value = value * 10 ** int(self.widths[column]) + float((probs * self.values).sum()) / total
            chunks += 1
        return value if chunks and math.isfinite(value) else None


class _PriceGrammar(LogitsProcessor):
    """Constrains decoding to <integer token> (<integer token> | <comma>)* <end> (see above).

    Step 0: only integer tokens. Later steps: if the model's probability of continuing the
    number (an integer token or a comma) is at least one half and fewer than ``max_digits``
    digits are written, only those tokens; otherwise the end token (EOS) is forced. Rows are
    told apart by their own last token, so a finished row
    (EOS, then padding) is left alone.
    """

    def __init__(self, estimator: ExpectedPricePredictor, prompt_width: int) -> None:
        self.width = prompt_width
        self.stop_id = estimator.stop_id
        self.integer_ids = estimator.ids
        self.continue_ids = torch.cat([estimator.ids, estimator.comma_ids])
        self.digits_of = estimator.digits_of
        self.max_digits = estimator.max_digits

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        blocked = torch.full_like(scores, -math.inf)
        if input_ids.shape[1] == self.width:  # the first answer token
            blocked[:, self.integer_ids] = scores[:, self.integer_ids]
            return blocked
        probs = torch.softmax(scores.float(), dim=-1)
        written = self.digits_of[input_ids[:, self.width :]].sum(dim=-1)
        go_on = (probs[:, self.continue_ids].sum(dim=-1) >= 0.5) & (written < self.max_digits)
        blocked[:, self.continue_ids] = scores[:, self.continue_ids]
        ended = torch.full_like(scores, -math.inf)
        ended[:, self.stop_id] = 0.0
        return torch.where(go_on[:, None], blocked, ended)


class _NumberEnded(StoppingCriteria):
    """Per-row stop once the number has ended (the last token is neither an integer nor a comma)."""

    def __init__(self, estimator: ExpectedPricePredictor) -> None:
        self.continue_ids = torch.cat([estimator.ids, estimator.comma_ids])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return ~torch.isin(input_ids[:, -1], self.continue_ids)


def make_predictor(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    method: str = "generate",
    batch_size: int = 16,
    max_new_tokens: int = 6,
) -> GenerationPredictor | ExpectedPricePredictor:
    """The predictor a config's ``inference.method`` names."""
    if method == "generate":
        return GenerationPredictor(model, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if method == "expected":
        return ExpectedPricePredictor(model, tokenizer, batch_size=batch_size)
    raise ValueError(f"unknown inference method {method!r}: use 'generate' or 'expected'")
