"""The specialist priced by a model server instead of in this process: vLLM serving its base model with the
registered LoRA adapter (``pricer specialist-serve`` prints and runs the command).

The agent still stands for one registered version, the ``@champion`` of ``registered_model`` or the version
``pricer-ensemble`` pins: it downloads that version's adapter folder (megabytes, once per version) for what
the folder states about prompting, and cuts each text to the adapter's training token budget with the base
model's tokenizer, exactly as the registered pyfunc does (``pricer.serving.specialist.adapter_prompting`` and
``prompts_from``). Each prompt goes to ``/v1/completions`` as it is (``pricer.frontier.completions``: no chat
template the adapter never saw), greedily, with the adapter's answer length, through the project's
OpenAI-compatible client: its retry policy, deadline, concurrency bound and answer parser. The answers are
then the registered model's, except where its own generation would stop early on a number glued to
letters ("42x"); a trained adapter answers "42.00".

It is ready when the registry names a version, that version's adapter was read, and the server lists the
served name (``GET /v1/models``); otherwise it is skipped with the reason, as a registry agent is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import openai
import pandas as pd

from pricer.agents.config import RemoteSpecialistConfig
from pricer.agents.estimators import AgentResult, _SkipLog, as_estimates
from pricer.frontier.client import sync_call
from pricer.frontier.completions import CompletionClient
from pricer.frontier.config import FrontierConfig, FrontierError, resolve_api_key
from pricer.serving.ensemble import member_inputs
from pricer.serving.specialist import AdapterPrompting, adapter_prompting, download_adapter, prompts_from
from pricer.serving.vllm import adapter_folder
from pricer.tracking.registry import champion_uri

log = logging.getLogger(__name__)


def endpoint(config: RemoteSpecialistConfig, max_tokens: int) -> FrontierConfig:
    """The client settings of the server: greedy answers of the adapter's length, nothing cached or billed."""
    return FrontierConfig(
        name="specialist-remote", model=config.model, base_url=config.base_url, api_key_env=config.api_key_env,
        max_concurrency=config.max_concurrency, timeout_s=config.timeout_s, max_retries=config.max_retries,
        backoff_initial_s=config.backoff_initial_s, backoff_max_s=config.backoff_max_s,
        max_retry_after_s=config.max_retry_after_s, temperature=0.0, max_tokens=max_tokens, seed=None,
        system_prompt="", cache_dir=None, cost_log=None, trace=config.trace)


class RemoteSpecialistAgent:
    """Prices with a registered specialist served elsewhere (see the module docstring)."""

    def __init__(self, name: str, config: RemoteSpecialistConfig, *, model_uri: str | None = None) -> None:
        self.name = name
        self.config = config
        self.registered_name = config.registered_model
        self.pinned = model_uri
        self.model_uri: str | None = None  # the version whose prompting is in use
        self._prompting: AdapterPrompting | None = None
        self._client: CompletionClient | None = None
        self._skip = _SkipLog(name)

    def __repr__(self) -> str:
        return f"RemoteSpecialistAgent({self.name!r}, {self.config.base_url!r}, model={self.config.model!r})"

    def ready(self) -> bool:
        try:
            uri = self.pinned if self.pinned is not None else champion_uri(self.registered_name)
        except Exception as error:  # noqa: BLE001 - the registry itself is unreachable: skip, say why
            return self._skip.skip(f"cannot read the model registry ({type(error).__name__}: {error})")
        if uri is None:
            self._client, self.model_uri = None, None
            return self._skip.skip(f"no @champion registered for {self.registered_name}")
        if uri != self.model_uri or self._client is None:
            try:
                adapter_dir = download_adapter(uri, adapter_folder(self.config.adapter_cache, uri))
                prompting = adapter_prompting(adapter_dir)
                client = CompletionClient(endpoint(self.config, prompting.max_new_tokens))
            except FrontierError as error:  # the key's variable is unset
                return self._skip.skip(str(error))
            except Exception as error:  # noqa: BLE001 - any failure to read the adapter skips the agent
                return self._skip.skip(f"the adapter of {uri} could not be read ({type(error).__name__}: {error})")
            if prompting.method != "generate":
                log.warning("%s prices by %r in process; over %s it prices by greedy generation", uri,
                            prompting.method, self.config.base_url)
            self._prompting, self._client, self.model_uri = prompting, client, uri
        served = self._served()
        if isinstance(served, str):
            return self._skip.skip(served)
        if self.config.model not in served:
            return self._skip.skip(f"{self.config.base_url} serves {sorted(served)}, not {self.config.model!r}")
        return self._skip.ok(f"{uri} served by {self.config.base_url} as {self.config.model}")

    def _served(self) -> set[str] | str:
        """The model names the server lists, or why it could not be asked."""
        assert self._client is not None
        frontier = self._client.config
        try:
            sdk = openai.OpenAI(api_key=resolve_api_key(frontier), base_url=frontier.base_url, max_retries=0,
                                timeout=frontier.timeout_s)
            try:
                return {model.id for model in sync_call(frontier, lambda: list(sdk.models.list()))}
            finally:
                sdk.close()
        except Exception as error:  # noqa: BLE001 - unreachable, refused, or not an OpenAI-compatible server
            return f"{self.config.base_url} cannot be asked what it serves ({type(error).__name__}: {error})"

    def estimate(self, texts: Sequence[str]) -> AgentResult:
        started = time.perf_counter()
        if (self._client is None or self._prompting is None) and not self.ready():
            return AgentResult(self.name, [math.nan] * len(texts), 0.0, error="not ready")
        assert self._client is not None and self._prompting is not None
        prompts = prompts_from(member_inputs(pd.DataFrame({"text": [str(text) for text in texts]})),
                               self._prompting.shorten)
        extra: dict[str, Any] = {"endpoint": self.config.base_url, "served_as": self.config.model}
        try:
            results = self._client.complete_prompts(prompts)
        except FrontierError as error:  # a refused key: every item is unanswered, and the reason is reported
            return AgentResult(self.name, [math.nan] * len(texts), time.perf_counter() - started,
                               model=self.model_uri, error=str(error), extra=extra)
        failed = [result.error for result in results if result.error is not None]
        return AgentResult(
            self.name, as_estimates([result.price for result in results], len(texts)),
            time.perf_counter() - started, model=self.model_uri,
            input_tokens=sum(result.input_tokens for result in results),
            output_tokens=sum(result.output_tokens for result in results),
            cost_usd=sum(result.cost_usd for result in results),
            error=f"{len(failed)} of {len(texts)} requests failed ({failed[0]})" if failed else None, extra=extra)
