"""A fake of the paid OpenAI API that speaks its real wire format, served over HTTP on 127.0.0.1.

The design allows a fake only for a paid remote API that cannot be reached, and then it must
speak the real wire format: this is FastAPI + uvicorn in a background thread (or its own
process: ``python tests/fake_openai.py --latency 0.2``), on a random free port, serving

- ``POST /v1/chat/completions`` (plain JSON and SSE streaming): a price derived from the
  prompt deterministically. When the prompt lists similar items as "Price is $N" lines the
  answer is their median, so retrieval visibly helps; otherwise a hash of the item text
  gives the price, phrased in a few ways ("$1,234.50", "Price is $12", "about 30 dollars")
  and, for about one item in eleven, no number at all.
- tool calls on the same path: a request with ``tools`` is answered by ``tool_policy`` (messages, tools,
  model) -> ``{"content": ..., "tool_calls": [{"name": ..., "arguments": ...}]}``, as an assistant message
  with ``tool_calls`` (finish_reason "tool_calls"); ``tool`` messages must answer the ``tool_call_id`` of
  an earlier assistant message, and every call must be answered before the conversation goes on (a 400
  otherwise, as the real API).
- ``POST /v1/completions`` (a prompt in, text out: how vLLM serves a base model with a LoRA adapter):
  ``completion_for(prompt, model, max_tokens)`` gives the text, by default a whole-dollar continuation ("123.00");
  ``GET /v1/models`` lists ``served_models``.
- ``/v1/files`` (multipart upload, retrieve) and ``/v1/fine_tuning/jobs`` (create, list,
  retrieve, events, cancel): a job moves queued -> running -> succeeded (or failed) as it is
  polled, emitting "metrics" events with a falling train loss.

Faults are injected on demand with a seeded RNG: each request to a path in ``fault_paths``
fails with probability ``failure_rate``, the kind drawn from ``fault_kinds`` weights:
``429`` (with Retry-After), ``500``, ``slow`` (sleeps ``slow_s`` before answering, for client
timeouts) and ``malformed`` (a 200 whose body is not JSON). Set them as attributes or with
``POST /_control``; ``GET /_stats`` and the attributes report request counts.

Billing is modelled like the real thing: a completion is charged when the server produces
it, even if a fault then garbles or delays the reply. A request carrying an
``Idempotency-Key`` that was already charged gets the stored response back, uncharged.
``charges`` maps each charged key to its usage, so a test can compare a client's cost log
with what the server billed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

FAULT_KINDS = ("429", "500", "slow", "malformed")
_PRICE_LINE = re.compile(r"Price is \$([0-9][0-9,]*(?:\.[0-9]+)?)")


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def rule_price(text: str) -> float:
    """The price the fake "model" believes an item text has (no examples in the prompt)."""
    return round(5.0 + (_digest(text) % 150_000) / 100.0, 2)


def rule_answer(messages: list[dict[str, Any]], model: str) -> str:
    """The fake model's answer: deterministic in the prompt, in a few phrasings, sometimes junk."""
    user = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
    examples = [float(value.replace(",", "")) for value in _PRICE_LINE.findall(user)]
    if examples:
        return f"Price is ${statistics.median(examples):,.2f}"
    price = rule_price(user)
    if model.startswith("ft:"):
        return f"Price is ${price:.2f}"
    style = _digest("style:" + user) % 11
    if style == 0:
        return "I'm sorry, I can't tell the price from that description."
    if style == 1:
        return f"${price:,.2f}"
    if style == 2:
        return f"Price is ${round(price)}"
    if style == 3:
        return f"It costs about {round(price)} dollars."
    return f"{price:.2f}"


def rule_completion(prompt: str, model: str, max_tokens: int = 16) -> str:
    """What the fake base model + adapter writes after a prompt: whole dollars, then whatever follows."""
    return f"{round(rule_price(prompt))}.00\n\nHow much"


def _tool_problem(messages: list[dict[str, Any]], tools: Any) -> str | None:
    """Why a conversation with tools is not one the real API accepts, or None."""
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools)):
        return "tools must be a list of {type: function, function: {name, parameters}}"
    open_calls: set[str] = set()
    for message in messages:
        role = message["role"]
        if role == "tool":
            if message.get("tool_call_id") not in open_calls:
                return ("Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                        "message with 'tool_calls'.")
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            return ("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                    f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    f"{', '.join(sorted(open_calls))}")
        if role == "assistant":
            open_calls = {call.get("id") for call in message.get("tool_calls") or []}
    return "the last assistant message's tool calls have no response messages" if open_calls else None


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in job.items() if not key.startswith("_")}


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class FakeOpenAI:
    """The server, its fault knobs and its counters. ``with FakeOpenAI() as server: server.base_url``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency_s: float = 0.0,
        failure_rate: float = 0.0,
        fault_kinds: dict[str, float] | None = None,
        fault_paths: tuple[str, ...] = ("/v1/chat/completions",),
        retry_after_s: float | str = 0.05,
        slow_s: float = 2.0,
        seed: int = 0,
        job_queued_polls: int = 1,
        job_running_polls: int = 2,
        job_outcome: str = "succeeded",
        answer_for: Any = None,
        completion_for: Any = None,
        tool_policy: Any = None,
        served_models: tuple[str, ...] = ("gpt-4o-mini",),
    ) -> None:
        self.api_key = api_key
        self.answer_for = answer_for  # (messages, model) -> the answer text; default: rule_answer
        self.completion_for = completion_for  # (prompt, model) -> the completion text; default: rule_completion
        self.tool_policy = tool_policy  # (messages, tools, model) -> {"content", "tool_calls"}
        self.served_models = tuple(served_models)
        self.prompts: list[str] = []  # every prompt /v1/completions was asked, in order
        self.latency_s = latency_s
        self.failure_rate = failure_rate
        self.fault_kinds = dict(fault_kinds or {"429": 1.0, "500": 1.0})
        self.fault_paths = tuple(fault_paths)
        self.retry_after_s = retry_after_s
        self.slow_s = slow_s
        self.job_queued_polls = job_queued_polls
        self.job_running_polls = job_running_polls
        self.job_outcome = job_outcome
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # path template -> count (the control paths excluded)
        self.faults: Counter[str] = Counter()  # fault kind -> count
        self.charges: dict[str, dict[str, int]] = {}  # idempotency key -> usage billed for it
        self.uncharged_replays = 0
        self.auth_failures = 0
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_events: dict[str, list[dict[str, Any]]] = {}
        self._job_polls: Counter[str] = Counter()
        self._responses: dict[str, dict[str, Any]] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the fake server is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> FakeOpenAI:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30,
            backlog=512,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ counters

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    @property
    def chat_requests(self) -> int:
        with self._lock:
            return self.requests["/v1/chat/completions"]

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "total_requests": sum(self.requests.values()),
                "faults": dict(self.faults),
                "charged_calls": len(self.charges),
                "charged_input_tokens": sum(u["prompt_tokens"] for u in self.charges.values()),
                "charged_output_tokens": sum(u["completion_tokens"] for u in self.charges.values()),
                "uncharged_replays": self.uncharged_replays,
                "auth_failures": self.auth_failures,
                "jobs": len(self.jobs),
                "files": len(self.files),
            }

    def configure(self, **changes: Any) -> None:
        allowed = {"latency_s", "failure_rate", "fault_kinds", "fault_paths", "retry_after_s", "slow_s",
                   "job_queued_polls", "job_running_polls", "job_outcome", "api_key"}
        for key, value in changes.items():
            if key not in allowed:
                raise ValueError(f"unknown control {key!r}")
            if key == "fault_paths":
                value = tuple(value)
            setattr(self, key, value)
        if "seed" in changes:
            self._rng.seed(changes["seed"])

    def _draw_fault(self, path: str) -> str | None:
        if self.failure_rate <= 0 or path not in self.fault_paths:
            return None
        with self._lock:
            if self._rng.random() >= self.failure_rate:
                return None
            kinds = [kind for kind in self.fault_kinds if self.fault_kinds[kind] > 0]
            kind = self._rng.choices(kinds, weights=[self.fault_kinds[kind] for kind in kinds])[0]
            self.faults[kind] += 1
            return kind

    # ------------------------------------------------------------------ the app

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake-openai", openapi_url=None, docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def gate(request: Request, call_next):
            path = request.url.path
            if path.startswith("/_"):
                return await call_next(request)
            template = re.sub(r"/(file|ftjob|ftevent)-[A-Za-z0-9]+", r"/{\1}", path)
            with self._lock:
                self.requests[template] += 1
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                with self._lock:
                    self.auth_failures += 1
                return _error(401, "Incorrect API key provided.", "invalid_request_error")
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            fault = self._draw_fault(template)
            if fault == "429":
                # A string is sent as it is: servers send garbage ("soon") too.
                wait = self.retry_after_s if isinstance(self.retry_after_s, str) else f"{self.retry_after_s:g}"
                return _error(429, "Rate limit reached; slow down.", "requests", headers={"retry-after": wait})
            if fault == "500":
                return _error(500, "The server had an error while processing your request.", "server_error")
            if fault == "slow" and template != "/v1/chat/completions":
                await request.body()  # read before the client gives up, then keep it waiting
                await asyncio.sleep(self.slow_s)
            request.state.fault = fault
            return await call_next(request)

        @app.post("/_control")
        async def control(request: Request):
            self.configure(**(await request.json()))
            return {"ok": True}

        @app.get("/_stats")
        async def stats():
            return self.stats()

        @app.post("/_reset")
        async def reset():
            self.reset_counters()
            return {"ok": True}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            try:
                body = await request.json()
                messages = body["messages"]
                model = body["model"]
            except (ValueError, KeyError, TypeError):
                return _error(400, "messages and model are required", "invalid_request_error")
            if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool")
                for m in messages
            ):
                return _error(400, "messages must be a non-empty list of role/content objects",
                              "invalid_request_error")
            tools = body.get("tools")
            if (problem := _tool_problem(messages, tools)) is not None:
                return _error(400, problem, "invalid_request_error")
            key = request.headers.get("idempotency-key")
            with self._lock:
                stored = self._responses.get(key) if key else None
                if stored is not None:
                    self.uncharged_replays += 1
            if stored is None:
                stored = self._complete(messages, model, tools)
                with self._lock:
                    charge_key = key or f"anon-{stored['id']}"
                    self.charges[charge_key] = dict(stored["usage"])
                    if key:
                        self._responses[key] = stored
            fault = getattr(request.state, "fault", None)
            if fault == "slow":  # charged already: the work was done, the client just never sees it in time
                await asyncio.sleep(self.slow_s)
            if fault == "malformed":
                return Response('{"id": "chatcmpl-broken", "choices": [ {"message": ', status_code=200,
                                media_type="application/json")
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(self._stream(stored, include_usage), media_type="text/event-stream")
            return JSONResponse(stored)

        @app.post("/v1/completions")
        async def completions(request: Request):
            try:
                body = await request.json()
                prompt, model = body["prompt"], body["model"]
            except (ValueError, KeyError, TypeError):
                return _error(400, "prompt and model are required", "invalid_request_error")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                return _error(400, "prompt must be a string or a list of strings", "invalid_request_error")
            if model not in self.served_models:
                return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
            key = request.headers.get("idempotency-key")
            with self._lock:
                self.prompts.extend(prompts)
                stored = self._responses.get(key) if key else None
                if stored is not None:
                    self.uncharged_replays += 1
            if stored is None:
                stored = self._text_completion(prompts, model, int(body.get("max_tokens") or 16))
                with self._lock:
                    self.charges[key or f"anon-{stored['id']}"] = dict(stored["usage"])
                    if key:
                        self._responses[key] = stored
            fault = getattr(request.state, "fault", None)
            if fault == "slow":
                await asyncio.sleep(self.slow_s)
            if fault == "malformed":
                return Response('{"id": "cmpl-broken", "choices": [ {"text": ', status_code=200,
                                media_type="application/json")
            return JSONResponse(stored)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                                               for name in self.served_models]}

        @app.post("/v1/files")
        async def upload(file: UploadFile = File(...), purpose: str = Form(...)):
            content = await file.read()
            if purpose == "fine-tune":
                try:
                    for line in content.decode("utf-8").splitlines():
                        if line.strip():
                            json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return _error(400, "the file is not valid JSONL", "invalid_request_error")
            file_id = "file-" + uuid.uuid4().hex[:24]
            record = {
                "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": file.filename or "upload.jsonl", "purpose": purpose, "status": "processed",
                "status_details": None,
            }
            with self._lock:
                self.files[file_id] = record
                self.file_contents[file_id] = content
            return record

        @app.get("/v1/files/{file_id}")
        async def get_file(file_id: str):
            record = self.files.get(file_id)
            if record is None:
                return _error(404, f"No such File object: {file_id}", "invalid_request_error")
            return record

        @app.post("/v1/fine_tuning/jobs")
        async def create_job(request: Request):
            body = await request.json()
            training = body.get("training_file")
            if training not in self.files:
                return _error(400, f"invalid training_file: {training}", "invalid_request_error")
            validation = body.get("validation_file")
            if validation is not None and validation not in self.files:
                return _error(400, f"invalid validation_file: {validation}", "invalid_request_error")
            idempotency = request.headers.get("idempotency-key")
            with self._lock:
                for job in self.jobs.values():
                    if idempotency and job.get("_idempotency_key") == idempotency:
                        return _public(job)
            job_id = "ftjob-" + uuid.uuid4().hex[:24]
            hyper = dict(body.get("hyperparameters") or {})
            hyper.setdefault("n_epochs", "auto")
            job = {
                "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()), "error": None,
                "fine_tuned_model": None, "finished_at": None, "hyperparameters": hyper,
                "model": body.get("model"), "organization_id": "org-fake", "result_files": [],
                "seed": body.get("seed") or 42, "status": "validating_files", "trained_tokens": None,
                "training_file": training, "validation_file": validation,
                "suffix": body.get("suffix"), "metadata": body.get("metadata"),
                "estimated_finish": None, "integrations": [], "_idempotency_key": idempotency,
            }
            with self._lock:
                self.jobs[job_id] = job
                self.job_events[job_id] = []
            self._event(job_id, "info", "Validating training file", "message")
            return _public(job)

        @app.get("/v1/fine_tuning/jobs")
        async def list_jobs(request: Request, limit: int = 20, after: str | None = None):
            jobs = sorted(self.jobs.values(), key=lambda job: job["created_at"], reverse=True)
            for name, value in request.query_params.items():  # metadata[k]=v filters, as the real API
                if match := re.fullmatch(r"metadata\[(.+)\]", name):
                    jobs = [job for job in jobs if (job.get("metadata") or {}).get(match.group(1)) == value]
            data = [_public(job) for job in jobs[:limit]]
            return {"object": "list", "data": data, "has_more": len(jobs) > limit}

        @app.get("/v1/fine_tuning/jobs/{job_id}")
        async def retrieve_job(job_id: str):
            if job_id not in self.jobs:
                return _error(404, f"No such fine-tuning job: {job_id}", "invalid_request_error")
            return _public(self._advance(job_id))

        @app.get("/v1/fine_tuning/jobs/{job_id}/events")
        async def job_events(job_id: str, limit: int = 20, after: str | None = None):
            if job_id not in self.jobs:
                return _error(404, f"No such fine-tuning job: {job_id}", "invalid_request_error")
            events = list(reversed(self.job_events[job_id]))  # newest first, like the real API
            if after is not None:
                ids = [event["id"] for event in events]
                events = events[ids.index(after) + 1:] if after in ids else events
            return {"object": "list", "data": events[:limit], "has_more": len(events) > limit}

        @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
        async def cancel_job(job_id: str):
            job = self.jobs.get(job_id)
            if job is None:
                return _error(404, f"No such fine-tuning job: {job_id}", "invalid_request_error")
            if job["status"] not in ("succeeded", "failed", "cancelled"):
                job["status"] = "cancelled"
                job["finished_at"] = int(time.time())
                self._event(job_id, "info", "Job cancelled", "message")
            return _public(job)

        return app

    # ------------------------------------------------------------------ behaviour

    def _complete(self, messages: list[dict[str, Any]], model: str, tools: Any = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        finish = "stop"
        if tools and self.tool_policy is not None:
            reply = self.tool_policy(messages, tools, model)
            message["content"] = reply.get("content")
            calls = [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                      "function": {"name": call["name"], "arguments": call["arguments"]
                                   if isinstance(call["arguments"], str) else json.dumps(call["arguments"])}}
                     for call in reply.get("tool_calls") or []]
            if calls:
                message["tool_calls"], finish = calls, "tool_calls"
            answer = (message["content"] or "") + json.dumps(calls)
        else:
            answer = message["content"] = (self.answer_for or rule_answer)(messages, model)
        said = [str(m.get("content") or "") + (json.dumps(m["tool_calls"]) if m.get("tool_calls") else "")
                for m in messages]
        prompt_tokens = sum(_tokens(text) + 4 for text in said) + (_tokens(json.dumps(tools)) if tools else 0)
        completion_tokens = _tokens(answer)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_fake",
        }

    def _text_completion(self, prompts: list[str], model: str, max_tokens: int) -> dict[str, Any]:
        texts = [(self.completion_for or rule_completion)(prompt, model, max_tokens) for prompt in prompts]
        prompt_tokens = sum(_tokens(prompt) for prompt in prompts)
        completion_tokens = sum(_tokens(text) for text in texts)
        return {
            "id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": "length"}
                        for i, text in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_fake",
        }

    async def _stream(self, stored: dict[str, Any], include_usage: bool):
        answer = stored["choices"][0]["message"]["content"]
        base = {"id": stored["id"], "object": "chat.completion.chunk", "created": stored["created"],
                "model": stored["model"], "system_fingerprint": "fp_fake"}
        pieces = [answer[i:i + 4] for i in range(0, len(answer), 4)] or [""]
        first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None}]}
        yield f"data: {json.dumps(first)}\n\n"
        for piece in pieces:
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
            await asyncio.sleep(0)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(last)}\n\n"
        if include_usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': stored['usage']})}\n\n"
        yield "data: [DONE]\n\n"

    def _event(self, job_id: str, level: str, message: str, kind: str, data: dict | None = None) -> None:
        event = {"id": "ftevent-" + uuid.uuid4().hex[:24], "object": "fine_tuning.job.event",
                 "created_at": int(time.time()), "level": level, "message": message, "type": kind,
                 "data": data or {}}
        with self._lock:
            self.job_events[job_id].append(event)

    def _advance(self, job_id: str) -> dict[str, Any]:
        """Each retrieve is one tick of the job's life: validating -> queued -> running -> outcome."""
        job = self.jobs[job_id]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        with self._lock:
            self._job_polls[job_id] += 1
            polls = self._job_polls[job_id]
        if polls <= self.job_queued_polls:
            if job["status"] != "queued":
                job["status"] = "queued"
                self._event(job_id, "info", "Job enqueued", "message")
            return job
        running_poll = polls - self.job_queued_polls
        if running_poll <= self.job_running_polls:
            if job["status"] != "running":
                job["status"] = "running"
                self._event(job_id, "info", "Fine-tuning job started", "message")
            step = running_poll * 10
            loss = round(2.0 / (1 + running_poll), 4)
            self._event(job_id, "info", f"Step {step}: training loss={loss}", "metrics",
                        {"step": step, "train_loss": loss, "valid_loss": round(loss * 1.1, 4),
                         "train_mean_token_accuracy": round(1 - loss / 3, 4), "total_steps": 10 *
                         self.job_running_polls})
            return job
        job["finished_at"] = int(time.time())
        if self.job_outcome == "succeeded":
            job["status"] = "succeeded"
            suffix = job.get("suffix") or "pricer"
            job["fine_tuned_model"] = f"ft:{job['model']}:fake-org:{suffix}:{job_id[-8:]}"
            training = self.file_contents.get(job["training_file"], b"")
            epochs = str(job["hyperparameters"].get("n_epochs"))
            job["trained_tokens"] = _tokens(training.decode("utf-8", "replace")) * (
                int(epochs) if epochs.isdigit() else 1)
            self._event(job_id, "info", "The job has successfully completed", "message")
        else:
            job["status"] = "failed"
            job["error"] = {"code": "invalid_training_file", "message": "Training failed (injected).",
                            "param": "training_file"}
            self._event(job_id, "error", "Fine-tuning job failed", "message")
        return job


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI API on 127.0.0.1 until killed.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API request")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    server = FakeOpenAI(latency_s=args.latency, failure_rate=args.failure_rate, api_key=args.api_key).start(
        args.port)
    print(f"READY {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
