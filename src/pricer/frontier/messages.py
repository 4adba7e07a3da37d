"""The chat messages a frontier model is asked with: the project's question, the item fenced as data.

Every prompt treats product text as untrusted: the item goes inside a data block it cannot close, the
similar items shown for retrieval lose anything that could pose as a priced example, and the system
prompt says that such text is data. The same messages serve zero-shot, retrieval and the API
fine-tuning data, so a fine-tuned model is asked exactly what it was taught.
"""

from __future__ import annotations

from collections.abc import Sequence

from pricer.core.prompt import (
    PROMPT_ANSWER_PREFIX,
    PROMPT_QUESTION,
    UNTRUSTED_SYSTEM_SUFFIX,
    defang,
    untrusted_block,
)

Messages = list[dict[str, str]]

RAG_INTRO = "To help, here are some similar items and their prices:"


def user_prompt(text: str, neighbours: Sequence[tuple[str, float]] = ()) -> str:
    """The project's question about the fenced item text, after similar items and their prices if given."""
    question = f"{PROMPT_QUESTION}\n\n{untrusted_block(text)}"
    if not neighbours:
        return question
    examples = "\n\n".join(f"{defang(other)}\n{PROMPT_ANSWER_PREFIX}{price:.2f}" for other, price in neighbours)
    return f"{RAG_INTRO}\n\n{examples}\n\nAnd now the item to price.\n{question}"


def build_messages(text: str, neighbours: Sequence[tuple[str, float]] = (), system_prompt: str = "") -> Messages:
    messages: Messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt + UNTRUSTED_SYSTEM_SUFFIX})
    messages.append({"role": "user", "content": user_prompt(text, neighbours)})
    return messages
