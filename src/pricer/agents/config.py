"""Typed configuration of the deal-hunting agents (``configs/agents.yaml``).

Every path is relative to the working directory the agents run in (the repository root).
Secrets never appear here: a notifier names the *environment variables* holding its URL,
token or user key, and the frontier agent names a ``configs/frontier/*.yaml`` file, which in
turn names the variable holding its API key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from pricer.core.config import StrictModel, load_config
from pricer.core.embedding import EmbeddingConfig, MiniLMEmbedding
from pricer.core.retry import RetrySettings
from pricer.core.secrets import without_credentials
from pricer.stages.ensemble import EnsembleConfig

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"^https?://[^\s/]+")
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")


def _check_env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):
        # Not echoing the value: someone may have pasted the secret itself.
        raise ValueError(
            "must be the NAME of an environment variable (e.g. PRICER_WEBHOOK_TOKEN), not a value"
        )
    return value


def _check_url(value: str | None) -> str | None:
    if value is not None and not _URL.match(value):
        raise ValueError("is not an http(s) URL")
    return value


# --------------------------------------------------------------------------- scanner


class FeedConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str

    _url = field_validator("url")(_check_url)


class ScannerConfig(StrictModel):
    timeout_s: float = Field(10.0, gt=0)  # connect/read/write/pool, per request (feed or page)
    max_deals_per_feed: int = Field(20, gt=0)
    max_page_bytes: int = Field(2_000_000, gt=0)  # larger pages are cut here, not read whole
    max_feed_tail_bytes: int = Field(
        20_000_000,
        ge=0,
        description="past max_page_bytes, a feed is read on this far only to count the entries it cut "
        "(never parsed); 0: the entries after the cut are not counted",
    )
    max_description_chars: int = Field(2000, ge=100)
    concurrency: int = Field(8, ge=1, le=64)  # pages fetched at once
    user_agent: str = "pricer-deal-scanner/0.1"
    # Deal links (and redirects) are followed only to a feed's own site or these hosts (and their
    # subdomains): a feed's content must not steer the scanner to internal addresses.
    allowed_hosts: list[str] = Field(default_factory=list)
    any_host: bool = False  # follow links anywhere (not advised)


# --------------------------------------------------------------------------- price agents


class RegistryAgentConfig(StrictModel):
    """An agent that prices with one registered model (its ``@champion``, or the version the ensemble pins)."""

    model: str = Field(min_length=1, description="the registered model")


class FrontierAgentConfig(RegistryAgentConfig):
    """The frontier model: ``config`` is the endpoint the pipeline evaluates and registers as ``model``."""

    model: str = Field("pricer-frontier", min_length=1, description="the registered model")
    config: Path | None = Field(None, description="a configs/frontier/*.yaml file (null: no frontier step)")


class RegistrySpecialistConfig(RegistryAgentConfig):
    """The specialist loaded in this process: base model + adapter, from the registry."""

    kind: Literal["registry"] = "registry"


class RemoteSpecialistConfig(RetrySettings):
    """The specialist asked over an OpenAI-compatible completions endpoint: a vLLM serving its base model with
    the registered adapter (``pricer specialist-serve`` prints the command), with the prompt it was trained on."""

    kind: Literal["remote"]
    base_url: str = Field(description="the server's OpenAI-compatible base URL, e.g. http://gpu-host:8000/v1")
    model: str = Field("pricer-specialist", min_length=1,
                       description="the name the server serves the adapter under (vLLM: --lora-modules NAME=DIR)")
    registered_model: str = Field("pricer-specialist", min_length=1, description=(
        "the registered specialist the server serves: its @champion (or the version the ensemble pins) states "
        "the token budget texts are cut to and the answer length"))
    api_key_env: str | None = Field(None, description=(
        "the NAME of the environment variable holding the server's key (vLLM --api-key); null: none"))
    max_concurrency: int = Field(16, ge=1, le=1024, description="requests in flight at once (the server batches them)")
    timeout_s: float = Field(30.0, gt=0, description="seconds one attempt may take")
    adapter_cache: Path = Field(Path(".cache/specialist-adapters"),
                                description="where each registered version's adapter folder is downloaded once")
    trace: bool = Field(True, description="an MLflow span per request, under the cycle's trace")

    _env = field_validator("api_key_env")(_check_env_name)

    @field_validator("base_url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        _check_url(value)
        if without_credentials(value) != value:  # never echoed: the password would reach every report
            raise ValueError("holds a user:password: put the key in the variable api_key_env names")
        return value.rstrip("/")


def _specialist_kind(value: Any) -> str:
    # Configs written before the remote kind existed name no kind: they mean the registry one.
    return str(value.get("kind", "registry") if isinstance(value, dict) else getattr(value, "kind", "registry"))


SpecialistConfig = Annotated[
    Annotated[RegistrySpecialistConfig, Tag("registry")] | Annotated[RemoteSpecialistConfig, Tag("remote")],
    Discriminator(_specialist_kind),
]


class AgentsSection(StrictModel):
    specialist: SpecialistConfig | None = RegistrySpecialistConfig(model="pricer-specialist")
    frontier: FrontierAgentConfig | None = FrontierAgentConfig()
    regressor: RegistryAgentConfig | None = RegistryAgentConfig(model="pricer-regressor")


class ChromaServerConfig(StrictModel):
    """A Chroma server (``chroma run --path DIR --host H --port P``) that holds the collection, for agents,
    services and UIs on several machines; ``path`` is then unused."""

    host: str = Field(min_length=1, description="the server's host name or address")
    port: int = Field(8000, ge=1, le=65535, description="its port")
    ssl: bool = Field(False, description="https rather than http")
    token_env: str | None = Field(None, description=(
        "the NAME of the environment variable holding a token sent as Authorization: Bearer (null: none)"))


class VectorStoreConfig(StrictModel):
    """The Chroma collection of the curated training products (the UI's map of the catalog)."""

    path: Path = Path("data/vectorstore")
    server: ChromaServerConfig | None = Field(None, description=(
        "a Chroma server to hold the collection instead of the embedded store at path (null: embedded)"))
    collection: str = Field("products", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{1,62}[A-Za-z0-9]$")
    source: Path = Path("data/curated/train.parquet")
    batch_size: int = Field(256, gt=0, description="texts embedded (and written) per batch")
    embedding: EmbeddingConfig = Field(default_factory=MiniLMEmbedding, description=(
        "the sentence embedding stored and queried: kind minilm (the transformer) or static (model2vec); "
        "changing it rebuilds the store"))


# --------------------------------------------------------------------------- planner, memory


class AutonomousConfig(StrictModel):
    """An LLM that runs the cycle with tools (scan, price, notify), inside the rule planner's limits
    (``pricer.agents.autonomous``). When it is unusable or fails, the rule planner decides the cycle."""

    config: Path = Field(description=(
        "a configs/frontier/*.yaml file: the chat endpoint that plans, its key variable, prices and retries"))
    max_steps: int = Field(8, ge=1, le=100, description=(
        "LLM calls per cycle; a cycle that needs more is decided by the rule planner"))
    max_cost_usd: float = Field(0.05, ge=0, description=(
        "what one cycle's LLM calls may cost (at the endpoint config's prices); the call that passes it ends "
        "the LLM's turn and the rule planner decides"))
    max_tokens: int = Field(400, gt=0, description="the longest reply of one call, in tokens")
    max_invalid_calls: int = Field(2, ge=0, description=(
        "malformed tool calls tolerated per cycle (bad JSON, an unknown tool or argument); one more and the rule "
        "planner decides"))


class PlannerConfig(StrictModel):
    discount_threshold: float = Field(0.3, gt=0, lt=1)  # (estimate - price) / estimate must exceed it
    min_estimate_usd: float = Field(0.0, ge=0)  # ignore items the ensemble thinks are worth less
    max_opportunities_per_cycle: int | None = Field(None, gt=0)  # the best N by discount (None: all)
    parallel_agents: bool = True  # agents price a batch at the same time (threads), not one after another
    max_discount: float = Field(
        0.8,
        gt=0,
        le=1,
        description="a deal more than this far below its estimate is rejected as implausible, not surfaced "
        "(0.8: a price under 20% of the estimate); 1: no cap",
    )
    llm: AutonomousConfig | None = Field(None, description=(
        "an LLM that plans each cycle with tools (null: the rules alone decide)"))

    @model_validator(mode="after")
    def _cap_above_threshold(self) -> PlannerConfig:
        if self.max_discount <= self.discount_threshold:
            raise ValueError("max_discount must be above discount_threshold, or no deal could surface")
        return self


class MemoryConfig(StrictModel):
    path: Path = Path("data/memory.sqlite")
    pending_max_age_hours: float = Field(48.0, gt=0)  # unsent older than this is expired, not sent late


# --------------------------------------------------------------------------- messenger


class HttpNotifierConfig(RetrySettings):
    """What every HTTP notifier shares: the one retry policy, and how long a claimed notification is its sender's."""

    lease_s: float | None = Field(
        None,
        gt=0,
        description=(
            "seconds a notification claimed by a cycle stays reserved for it; the claim of a cycle that crashed "
            "on another machine, or hangs, is taken over (and the notification resent with the same "
            "Idempotency-Key) once it runs out (one whose process here has exited, at once). It must outlast "
            "the longest send, or a slow sender's notification is sent twice. null: that longest send under the "
            "retry settings (4 x timeout_s per attempt, the longest wait between attempts) plus 2 s"
        ),
    )


class WebhookConfig(HttpNotifierConfig):
    """POST a JSON body to a URL; an ``Idempotency-Key`` header per deal lets the receiver dedupe."""

    kind: Literal["webhook"] = "webhook"
    url: str | None = None  # a URL that is not secret
    url_env: str | None = "PRICER_WEBHOOK_URL"  # or the env var holding it (Slack-style secret URLs)
    token_env: str | None = None  # env var with a bearer token, sent as ``Authorization: Bearer``

    _url = field_validator("url")(_check_url)
    _envs = field_validator("url_env", "token_env")(_check_env_name)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url and url_env")
        return self


class NtfyConfig(HttpNotifierConfig):
    """ntfy.sh (or a self-hosted ntfy): a POST of the message to ``<server>/<topic>``."""

    kind: Literal["ntfy"] = "ntfy"
    server: str = "https://ntfy.sh"
    topic_env: str = "PRICER_NTFY_TOPIC"  # anyone who knows a public topic can read it: keep it secret
    token_env: str | None = None  # access token of a protected topic
    priority: int = Field(3, ge=1, le=5)

    _server = field_validator("server")(_check_url)
    _envs = field_validator("topic_env", "token_env")(_check_env_name)


class PushoverConfig(HttpNotifierConfig):
    """Pushover's message API: an application token and a user (or group) key, both from the environment."""

    kind: Literal["pushover"] = "pushover"
    api_url: str = "https://api.pushover.net/1/messages.json"
    token_env: str = "PUSHOVER_TOKEN"
    user_env: str = "PUSHOVER_USER"

    _api = field_validator("api_url")(_check_url)
    _envs = field_validator("token_env", "user_env")(_check_env_name)


class LogNotifierConfig(StrictModel):
    """Only log the opportunity (demos, dry runs); it counts as delivered."""

    kind: Literal["log"] = "log"


NotifierConfig = Annotated[
    WebhookConfig | NtfyConfig | PushoverConfig | LogNotifierConfig, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- schedule, tracking, ui


def _check_cron(value: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday)")
    return value


class ScheduleConfig(StrictModel):
    deals_every_minutes: int = Field(15, ge=1, le=59)  # becomes the cron "*/N * * * *"
    retrain_cron: str | None = Field("0 4 * * 1", description=(
        "when the retraining flow runs: the one place its schedule is set (configs/retrain.yaml says what it "
        "does); null: no retraining deployment"))
    retrain_flow: str = "flows.retrain:retrain_flow"  # module:function, imported when served
    retrain_parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timezone: str = "UTC"

    _cron = field_validator("retrain_cron")(lambda value: value if value is None else _check_cron(value))

    @property
    def deals_cron(self) -> str:
        return f"*/{self.deals_every_minutes} * * * *"


class AgentsTrackingConfig(StrictModel):
    experiment: str = "pricer-agents"
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI wins; default sqlite under mlruns/
    trace: bool = True  # one MLflow trace per planner cycle


class UIConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=0, le=65535)
    refresh_s: float = Field(2.0, gt=0)
    log_lines: int = Field(200, gt=0)
    table_rows: int = Field(200, gt=0)
    plot_max_points: int = Field(3000, gt=0)


# --------------------------------------------------------------------------- service, mcp


class ServiceConfig(StrictModel):
    """The REST service over the registered champions (``pricer serve``)."""

    host: str = Field("127.0.0.1", description="interface to listen on (127.0.0.1: this machine only)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0: any free port)")
    token_env: str | None = Field(
        None, description="NAME of the environment variable holding the bearer token that /v1/* and /metrics "
        "require; null: no token (keep the service on 127.0.0.1 then)")
    reload_s: float = Field(30.0, gt=0, description="seconds between checks of the champions' versions; a moved "
                            "alias is loaded and swapped in without a restart")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies are refused (413)")
    max_batch: int = Field(64, ge=1, le=1000, description="most products in one POST /v1/price")
    neighbours: int = Field(5, ge=0, le=50, description="training products cited per quote by default (0: none)")
    max_neighbours: int = Field(20, ge=0, le=200, description="most neighbours a request may ask for")

    _env = field_validator("token_env")(_check_env_name)


class MCPConfig(StrictModel):
    """The MCP server (``pricer mcp``): pricing, similar products, deals and the leaderboard as tools."""

    transport: Literal["stdio", "http"] = Field("stdio", description="stdio (a client starts it) or streamable HTTP")
    host: str = Field("127.0.0.1", description="interface of the HTTP transport")
    port: int = Field(8001, ge=0, le=65535, description="port of the HTTP transport")
    path: str = Field("/mcp", pattern=r"^/[A-Za-z0-9/_-]*$", description="endpoint of the HTTP transport")
    token_env: str | None = Field(None, description="NAME of the environment variable holding the bearer token the "
                                  "HTTP transport requires; null: none")
    allow_deal_cycle: bool = Field(False, description="offer the run_deal_cycle tool (it scans feeds and sends "
                                   "notifications: off unless enabled)")
    neighbours: int = Field(5, ge=0, le=50, description="training products cited per quote by default")
    experiment: str = Field("pricer", description="the MLflow experiment the leaderboard reads")

    _env = field_validator("token_env")(_check_env_name)


class AgentsConfig(StrictModel):
    feeds: list[FeedConfig] = Field(default_factory=list)
    scanner: ScannerConfig = Field(default_factory=ScannerConfig)
    agents: AgentsSection = Field(default_factory=AgentsSection)
    vectorstore: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    messenger: NotifierConfig = Field(default_factory=WebhookConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    tracking: AgentsTrackingConfig = Field(default_factory=AgentsTrackingConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    mcp: MCPConfig = Field(default_factory=MCPConfig)

    @model_validator(mode="after")
    def _unique_feeds(self) -> AgentsConfig:
        names = [feed.name for feed in self.feeds]
        if len(set(names)) != len(names):
            raise ValueError(f"feed names must be unique, got {names}")
        return self


DEFAULT_CONFIG_PATH = Path("configs/agents.yaml")


def load_agents_config(path: str | Path = DEFAULT_CONFIG_PATH) -> AgentsConfig:
    return load_config(AgentsConfig, path)
