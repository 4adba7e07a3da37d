"""One tool-calling chat turn over an OpenAI-compatible endpoint: the conversation and the tools go out, the
assistant's message (text, and the tool calls it asks for) comes back.

``ToolChat.turn`` is one logical call under the project's one retry policy (``sync_call``: 429, 5xx,
timeouts and dropped connections are retried, Retry-After honoured; a refused key is a
``FrontierAuthError``; a 200 whose body is not a chat completion is retried as malformed). One
``Idempotency-Key`` per logical call goes with every attempt, so a retry is not billed twice. Each turn
is one CHAT_MODEL span (messages, tools, the reply, token usage and cost) under the caller's active
span when tracing is on; the key never reaches it.

What the tool calls *mean* is the caller's business: their arguments come back as the raw JSON text the
model wrote, for the caller to validate.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Self

import openai

from pricer.core.retry import Retryable
from pricer.frontier.cache import request_key
from pricer.frontier.client import sync_call
from pricer.frontier.config import FrontierConfig, resolve_api_key
from pricer.frontier.tracing import chat_attributes, start_span, usage_attributes


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it: not yet validated


@dataclass
class ToolTurn:
    """The assistant's reply to one turn, and what it cost."""

    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    response_id: str | None = None

    def message(self) -> dict[str, Any]:
        """The assistant message, in the wire format, to append to the conversation before the tool answers."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [{"id": call.id, "type": "function",
                                      "function": {"name": call.name, "arguments": call.arguments}}
                                     for call in self.tool_calls]
        return message


class ToolChat:
    """Tool-calling turns against one endpoint (``configs/frontier/*.yaml``); ``max_tokens`` per reply."""

    def __init__(self, config: FrontierConfig, *, max_tokens: int, traced: bool = False) -> None:
        self.config = config
        self.max_tokens = max_tokens
        self.traced = traced
        # The key lives in the SDK client only; it is never logged or traced.
        self._sdk = openai.OpenAI(api_key=resolve_api_key(config), base_url=config.base_url, max_retries=0,
                                  timeout=config.timeout_s)

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ToolTurn:
        params: dict[str, Any] = {"temperature": self.config.temperature, "max_tokens": self.max_tokens}
        if self.config.seed is not None:
            params["seed"] = self.config.seed
        key = request_key(self.config.model, messages, {**params, "tools": tools})
        idempotency_key = hashlib.sha256(f"pricer:{self.config.name}:tools:{key}".encode()).hexdigest()[:32]

        def attempt() -> Any:
            try:
                completion = self._sdk.chat.completions.create(
                    model=self.config.model, messages=messages, tools=tools, tool_choice="auto", **params,
                    extra_headers={"Idempotency-Key": idempotency_key})
                completion.choices[0].message  # noqa: B018 - a body without one is malformed: retried
            except (ValueError, openai.APIResponseValidationError, AttributeError, TypeError, IndexError):
                raise Retryable("malformed response") from None
            return completion

        with start_span(self.traced, f"chat {self.config.model}", "CHAT_MODEL") as span:
            if span is not None:
                span.set_inputs({"messages": messages, "tools": [tool["function"]["name"] for tool in tools],
                                 "model": self.config.model, **params})
            started = time.perf_counter()
            completion = sync_call(self.config, attempt)
            result = self._read(completion, time.perf_counter() - started)
            if span is not None:
                self._annotate(span, result)
        return result

    def _read(self, completion: Any, latency_s: float) -> ToolTurn:
        choice = completion.choices[0]
        calls = [ToolCall(str(call.id), str(call.function.name), str(call.function.arguments or ""))
                 for call in choice.message.tool_calls or [] if getattr(call, "function", None) is not None]
        usage = completion.usage
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.config.cost_usd(input_tokens, output_tokens)
        return ToolTurn(choice.message.content, calls, choice.finish_reason, input_tokens, output_tokens, cost,
                        latency_s, getattr(completion, "id", None))

    def _annotate(self, span: Any, turn: ToolTurn) -> None:
        span.set_outputs({"content": turn.content, "finish_reason": turn.finish_reason,
                          "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in turn.tool_calls]})
        span.set_attributes({
            "latency_s": turn.latency_s, "cost_usd": turn.cost_usd, **chat_attributes(self.config),
            **usage_attributes(self.config, turn.input_tokens, turn.output_tokens, turn.cost_usd),
        })


def arguments_of(call: ToolCall) -> dict[str, Any]:
    """A tool call's arguments as a JSON object (``ValueError`` or ``TypeError`` when they are not one)."""
    value = json.loads(call.arguments or "{}")
    if not isinstance(value, dict):
        raise TypeError("the arguments are not a JSON object")
    return value
