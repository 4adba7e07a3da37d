"""Bare-prompt completions (``POST /v1/completions``) through the frontier client's machinery.

A fine-tuned open model served by vLLM (the base model with the registered LoRA adapter) must be asked
exactly what it was trained on: the project's prompt as raw text, continued after "Price is $". A chat
request would wrap it in the base model's chat template, which the adapter never saw, so its answers
would not be the registered model's. ``CompletionClient`` is ``FrontierClient`` with only the SDK call
swapped: the same concurrency bounds, retry policy, deadline, cost accounting, tracing and answer parser
(``pricer.core.parsing.find_price``) apply to every prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

from pricer.frontier.client import FrontierClient
from pricer.frontier.messages import Messages
from pricer.frontier.usage import CallResult


def as_conversation(prompt: str) -> Messages:
    """A raw prompt in the shape the client batches, caches and traces."""
    return [{"role": "user", "content": prompt}]


class CompletionClient(FrontierClient):
    """Sends each prompt to the completions endpoint as it is; streaming is not used there."""

    @property
    def params(self) -> dict[str, Any]:
        # echo=False asks for the continuation alone (the parser must not read the prompt's numbers); it also
        # keeps the cache key of a prompt apart from a chat request with the same text.
        return {**super().params, "echo": False}

    def complete_prompts(self, prompts: Sequence[str]) -> list[CallResult]:
        return self.complete_many([as_conversation(prompt) for prompt in prompts])

    async def _request(
        self, client: openai.AsyncOpenAI, kwargs: dict[str, Any], started: float
    ) -> tuple[str | None, Any, float | None, str | None]:
        messages = kwargs.pop("messages")
        completion = await client.completions.create(prompt=messages[-1]["content"], **kwargs)
        if not getattr(completion, "choices", None):
            raise ValueError("a completion without choices")
        return completion.choices[0].text, completion.usage, None, getattr(completion, "id", None)
