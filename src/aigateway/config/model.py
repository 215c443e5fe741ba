"""gateway.yaml, version 1, as typed, frozen pydantic models.

Unknown keys are rejected everywhere (a typo is an error, never a silent no-op).
Secrets are ``SecretStr`` so they never show in a repr, a log line or an error.
Cross-references (a route naming a provider that exists, ...) are checked by
``GatewayConfig.problems()``, which returns YAML paths so the loader can add lines.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)

Path = tuple[str | int, ...]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
Name = Annotated[str, StringConstraints(pattern=_NAME_RE)]
#: a route name, or a wildcard route "prefix/*" that serves "prefix/<anything>"
RouteName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}(/\*)?$")
]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/ -]{0,128}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegDecimal = Annotated[Decimal, Field(ge=0)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a time zone, e.g. 2027-01-01T00:00:00Z")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


#: a regular expression, checked when the config loads
Regex = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_regex)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- static sections -------------------------------------------------------------------


class ServerConfig(Strict):
    """Listener settings. Static: a change needs a restart."""

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    #: idle keep-alive connections are closed after this (also bounds slowloris)
    keepalive_timeout_s: Annotated[float, Field(gt=0)] = 75.0
    #: SIGTERM: in-flight requests and streams get this long to finish
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 30.0
    #: connections the gateway keeps to all upstreams together
    upstream_max_connections: PositiveInt = 1000
    #: access log format: one JSON object per line, or key=value for humans
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: /metrics answers only "Authorization: Bearer <token>" whose SHA-256 this is
    metrics_token_sha256: Sha256Hex | None = None
    #: also serve /metrics (and /healthz) on this port, e.g. for a scraper on
    #: another network; /metrics stays on the main port too unless a token guards it
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None


class AdminConfig(Strict):
    key_sha256: Sha256Hex


class OnUnavailable(Strict):
    """What to do while the shared state (Redis) cannot be reached."""

    #: local: this replica counts alone; allow: not enforced; deny: 503
    rate_limits: Literal["local", "allow", "deny"] = "local"
    #: deny: 503 (fail closed); allow: served unchecked
    budgets: Literal["deny", "allow"] = "deny"


class StateConfig(Strict):
    """Where rate-limit and budget counters live. Static: a change needs a restart."""

    backend: Literal["memory", "redis"] = "memory"
    url: SecretStr | None = None
    #: Redis keys are "{<prefix>}:..." (one hash tag: one Cluster slot)
    key_prefix: Name = "aigateway"
    #: bound on every Redis call, connecting included
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5
    #: Redis connections per replica; a burst beyond waits for one (up to 10 x timeout_s)
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 64
    on_unavailable: OnUnavailable = OnUnavailable()

    @model_validator(mode="after")
    def _url_for_redis(self) -> StateConfig:
        if self.backend == "redis" and self.url is None:
            raise ValueError("backend 'redis' needs 'url', e.g. \"${REDIS_URL}\"")
        return self


LogMode = Literal["full", "metadata"]


class Redaction(Strict):
    """What is masked in logged bodies (always, before a body reaches the disk)."""

    emails: bool = True
    phone_numbers: bool = True
    #: 13-19 digit numbers that pass the Luhn check
    card_numbers: bool = True
    #: API keys and tokens (OpenAI, Anthropic, Google, AWS, GitHub, Slack, JWT,
    #: bearer, private key blocks, "password: ..." pairs)
    secrets: bool = True
    #: more regular expressions; matches become [REDACTED]
    patterns: list[Regex] = []


class PromptLogConfig(Strict):
    """The append-only SQLite log of every request. Static: a change needs a restart
    (except ``redact``, ``mode`` and the projects' ``prompt_log``)."""

    path: str = "./data/prompts.sqlite"
    #: bodies: full (redacted) | metadata (none); the accounting row is always written
    mode: LogMode = "full"
    #: strict: a response's last byte is sent after its row is committed;
    #: async: rows wait in a bounded queue (drops counted)
    durability: Literal["strict", "async"] = "strict"
    #: async only: rows waiting at most; beyond, new rows are dropped and counted
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: fsync every commit (survives power loss); off: survives a crash of the process
    fsync: bool = False
    #: start a new file past this size or age; old files are kept, read-only
    rotate_mb: Annotated[float, Field(gt=0)] | None = 1024.0
    rotate_days: Annotated[float, Field(gt=0)] | None = None
    #: a logged request or response body is cut at this many bytes
    max_body_bytes: Annotated[int, Field(ge=0)] = 65536
    redact: Redaction = Redaction()


# --- providers -------------------------------------------------------------------------


class Timeouts(Strict):
    connect_s: Annotated[float, Field(gt=0)] = 10.0
    #: longest silence while waiting for response headers or the next stream chunk
    read_s: Annotated[float, Field(gt=0)] = 300.0
    #: deadline for the response to start (headers, and a stream's first chunk);
    #: past it the next target is tried. Unset = read_s alone applies
    first_byte_s: Annotated[float, Field(gt=0)] | None = None
    #: whole request, streams included; unset = no overall cap
    total_s: Annotated[float, Field(gt=0)] | None = None


class _ProviderBase(Strict):
    timeouts: Timeouts = Timeouts()
    #: extra headers sent upstream with every request (values may be ${ENV})
    headers: dict[str, str] = {}
    #: price this provider's models from this genai-prices provider's list (e.g.
    #: ``openai`` for a proxy in front of OpenAI); default: by the base URL
    price_as: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None
    ) = None


#: OpenAI-compatible services: their base URL, and whether they accept
#: stream_options.include_usage (without it, a stream's usage is what the server
#: sends by itself, else counted locally)
PRESETS: dict[str, tuple[str, bool]] = {
    "openai": ("https://api.openai.com/v1", True),
    "deepseek": ("https://api.deepseek.com/v1", True),
    "mistral": ("https://api.mistral.ai/v1", False),
    "groq": ("https://api.groq.com/openai/v1", True),
    "together": ("https://api.together.xyz/v1", True),
    "openrouter": ("https://openrouter.ai/api/v1", True),
    "xai": ("https://api.x.ai/v1", True),
    "fireworks": ("https://api.fireworks.ai/inference/v1", True),
    "gemini-openai": ("https://generativelanguage.googleapis.com/v1beta/openai", True),
    "ollama": ("http://127.0.0.1:11434/v1", True),
    "vllm": ("http://127.0.0.1:8000/v1", True),
    "lmstudio": ("http://127.0.0.1:1234/v1", False),
}
Preset = Literal[
    "openai",
    "deepseek",
    "mistral",
    "groq",
    "together",
    "openrouter",
    "xai",
    "fireworks",
    "gemini-openai",
    "ollama",
    "vllm",
    "lmstudio",
]


class OpenAIProvider(_ProviderBase):
    """OpenAI itself or any OpenAI-compatible server (vLLM, Ollama, DeepSeek, ...)."""

    type: Literal["openai"]
    #: fills in base_url and stream_usage for a known service (both can still be set)
    preset: Preset | None = None
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] = (
        "https://api.openai.com/v1"
    )
    api_key: SecretStr | None = None
    #: send stream_options.include_usage upstream (some servers reject it)
    stream_usage: bool = True
    #: the field an output cap goes in: OpenAI's reasoning models refuse max_tokens
    #: and want max_completion_tokens; many other servers know only max_tokens
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("preset"), str):
            found = PRESETS.get(data["preset"])
            if found is not None:
                defaults: dict[str, Any] = {"base_url": found[0], "stream_usage": found[1]}
                if data["preset"] == "openai":
                    defaults["max_tokens_field"] = "max_completion_tokens"
                data = {**defaults, **data}
        return data


class MockProvider(_ProviderBase):
    """Built in, offline: deterministic OpenAI-shaped answers for trials and load tests."""

    type: Literal["mock"]
    #: fixed reply text; default: a sentence derived from the prompt
    reply: str | None = None
    stream_chunks: Annotated[int, Field(ge=1, le=10_000)] = 8
    chunk_delay_ms: Annotated[float, Field(ge=0)] = 0.0
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    #: fraction of requests that fail with error_status (deterministic sequence)
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_status: Annotated[int, Field(ge=400, le=599)] = 503
    embedding_dimensions: Annotated[int, Field(ge=1, le=8192)] = 16


class AzureProvider(_ProviderBase):
    """Azure OpenAI: a target's ``model`` is the deployment name (``api: deployments``)."""

    type: Literal["azure"]
    #: https://<resource>.openai.azure.com
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    api_key: SecretStr | None = None
    api: Literal["deployments", "v1"] = "deployments"
    api_version: Annotated[str, StringConstraints(pattern=r"^[0-9a-z.-]{4,40}$")] = "2024-10-21"
    #: stream_options.include_usage (api-version 2024-09-01-preview and later)
    stream_usage: bool = True

    @property
    def base_url(self) -> str:
        """Where prices are looked up (genai-prices knows Azure by its host)."""
        return self.endpoint.rstrip("/") + "/openai"


class GeminiProvider(_ProviderBase):
    """Google's Gemini API (AI Studio key); callers keep using chat completions."""

    type: Literal["gemini"]
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] = (
        "https://generativelanguage.googleapis.com/v1beta"
    )
    api_key: SecretStr | None = None


class ThinkingBudgets(Strict):
    """``reasoning_effort`` → Anthropic ``thinking.budget_tokens``."""

    minimal: Annotated[int, Field(ge=1024)] = 1024
    low: Annotated[int, Field(ge=1024)] = 1024
    medium: Annotated[int, Field(ge=1024)] = 4096
    high: Annotated[int, Field(ge=1024)] = 16384


class AnthropicProvider(_ProviderBase):
    """Anthropic's Messages API; callers keep speaking OpenAI chat completions."""

    type: Literal["anthropic"]
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] = (
        "https://api.anthropic.com/v1"
    )
    api_key: SecretStr | None = None
    #: sent as anthropic-version
    version: str = "2023-06-01"
    #: sent as anthropic-beta (comma-separated)
    beta: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,100}$")]] = []
    #: max_tokens sent when neither the caller nor the target set one (Anthropic
    #: requires it)
    default_max_tokens: PositiveInt = 4096
    thinking_budgets: ThinkingBudgets = ThinkingBudgets()


ProviderConfig = Annotated[
    OpenAIProvider | AzureProvider | AnthropicProvider | GeminiProvider | MockProvider,
    Field(discriminator="type"),
]


# --- routing ---------------------------------------------------------------------------

RetryOn = Literal[408, 409, 429, 500, 502, 503, 504, 529, "timeout", "connect"]


class RetryPolicy(Strict):
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    initial_backoff_s: Annotated[float, Field(ge=0)] = 0.25
    max_backoff_s: Annotated[float, Field(ge=0)] = 8.0
    retry_on: list[RetryOn] = [429, 500, 502, 503, 504, 529, "timeout", "connect"]


class CircuitBreaker(Strict):
    """Skip a target after ``failures`` failures within ``window_s``, for ``cooldown_s``;
    then let one probe through (half-open) and close again on success."""

    enabled: bool = True
    failures: Annotated[int, Field(ge=1)] = 5
    window_s: Annotated[float, Field(gt=0)] = 10.0
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0


class Target(Strict):
    provider: Name
    #: the model name sent upstream; "*" in a wildcard route: the part after the prefix
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    weight: Annotated[int, Field(ge=0)] = 1
    #: the model's context window in tokens: a prompt estimated larger skips this target
    context_window: PositiveInt | None = None
    #: cap on max_tokens / max_completion_tokens sent to this target
    max_tokens: PositiveInt | None = None
    #: fields set on the upstream request body (override the caller's), e.g.
    #: {reasoning_effort: low}
    params: dict[str, Any] = {}


Strategy = Literal["fallback", "weighted", "round_robin", "least_latency", "least_busy"]


class Route(Strict):
    targets: Annotated[list[Target], Field(min_length=1)]
    strategy: Strategy = "fallback"
    retry: Name | None = None
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    #: tried once when a target refuses on content policy (an error or
    #: finish_reason "content_filter"); unset = the refusal goes to the caller
    content_filter_fallback: Target | None = None
    #: shown in /v1/models as owned_by
    owned_by: str = "aigateway"
    guardrails: Guardrails | None = None
    #: identical requests to this route are answered from the cache
    cache: RouteCache | None = None


GuardAction = Literal["off", "log", "redact", "block"]


class GuardPattern(Strict):
    #: shown in errors, metrics and the prompt log (never the matched text)
    name: Name
    regex: Regex
    action: GuardAction = "block"


class Guardrails(Strict):
    """What to do when a request (or answer) contains personal data, secrets or an
    injection attempt. Unset fields inherit: project, then key, then route."""

    email: GuardAction | None = None
    phone: GuardAction | None = None
    #: 13-19 digits passing the Luhn check
    card: GuardAction | None = None
    #: IBANs passing the mod-97 check
    iban: GuardAction | None = None
    #: US social security numbers (AAA-GG-SSSS)
    ssn: GuardAction | None = None
    #: IPv4 addresses
    ip: GuardAction | None = None
    #: API keys and tokens, private keys, JWTs
    secrets: GuardAction | None = None
    #: prompt-injection phrases ("ignore previous instructions", ...)
    injection: Literal["off", "log", "block"] | None = None
    #: more injection phrases (regular expressions, case-insensitive)
    injection_phrases: list[Regex] = []
    patterns: list[GuardPattern] = []
    #: also check answers, whole and streamed: log, redact, or block (the answer is
    #: withheld, finish_reason content_filter)
    responses: bool | None = None
    #: streamed answers with redact or block rules: characters held back while they
    #: are checked (a match is never split; a longer one may be partly delivered)
    stream_window: Annotated[int, Field(ge=16, le=4096)] | None = None


class SemanticCache(Strict):
    """Also answer a chat request whose last message means the same as a cached
    one's (the conversation before it, and every other field, the same)."""

    #: the route (a name under models) that embeds the caller's last message
    embeddings: str
    #: cosine similarity the cached message must reach
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.95
    #: cached messages compared for one conversation at most (the oldest go first)
    max_entries: Annotated[int, Field(ge=1, le=100_000)] = 1000


class RouteCache(Strict):
    """Serve identical requests from a cache: per route or per project (opt-in)."""

    #: entries live this long
    ttl_s: Annotated[float, Field(gt=0)] = 300.0
    #: similar requests too (embeddings of the last message, cosine similarity)
    semantic: SemanticCache | None = None


class CacheConfig(Strict):
    """Where cached answers live. Static: a change needs a restart."""

    #: memory: this process (LRU); redis: shared by replicas (state.url)
    backend: Literal["memory", "redis"] = "memory"
    #: memory: entries kept at most (least recently used go first)
    max_entries: PositiveInt = 10_000
    #: answers larger than this are not cached
    max_entry_bytes: PositiveInt = 1024 * 1024


class Price(Strict):
    input_per_mtok: NonNegDecimal
    output_per_mtok: NonNegDecimal
    cached_input_per_mtok: NonNegDecimal | None = None
    cache_write_per_mtok: NonNegDecimal | None = None


# --- tenants ---------------------------------------------------------------------------


class RateLimits(Strict):
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    concurrency: PositiveInt | None = None


class Budget(Strict):
    window: Literal["day", "week", "month", "total"]
    usd: NonNegDecimal | None = None
    tokens: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _has_limit(self) -> Budget:
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget needs 'usd', 'tokens' or both")
        return self


class Governance(Strict):
    """How budgets and token limits reserve before a request is sent."""

    #: max_tokens the gateway sets upstream when a budget applies and neither the
    #: caller nor the target (targets[].max_tokens) set one; lowered to what the
    #: remaining budget can pay for
    default_max_tokens: PositiveInt = 4096
    #: a reservation (or concurrency slot) not settled by then is given back;
    #: longer than any request may take
    lease_s: Annotated[float, Field(gt=0)] = 3600.0


class Project(Strict):
    #: route names this project may use; unset = all
    models: list[RouteName] | None = None
    rate_limits: RateLimits | None = None
    budgets: list[Budget] = []
    prompt_log: LogMode | None = None
    guardrails: Guardrails | None = None
    #: cache this project's requests to every route (a route's own setting wins)
    cache: RouteCache | None = None
    provider_keys: dict[Name, SecretStr] = {}
    labels: dict[LabelKey, Label] = {}


class Key(Strict):
    id: Name
    project: Name
    sha256: Sha256Hex
    #: narrows the project's allow-list further; unset = the project's
    models: list[RouteName] | None = None
    rate_limits: RateLimits | None = None
    #: limits of this key on one route, on top of its own and its project's
    route_rate_limits: dict[RouteName, RateLimits] = {}
    budgets: list[Budget] = []
    guardrails: Guardrails | None = None
    expires_at: AwareDatetime | None = None
    disabled: bool = False
    labels: dict[LabelKey, Label] = {}


# --- the file --------------------------------------------------------------------------


class GatewayConfig(Strict):
    version: Literal[1]
    server: ServerConfig = ServerConfig()
    admin: AdminConfig | None = None
    state: StateConfig = StateConfig()
    governance: Governance = Governance()
    cache: CacheConfig = CacheConfig()
    prompt_log: PromptLogConfig | None = None
    providers: Annotated[dict[Name, ProviderConfig], Field(min_length=1)]
    retry_policies: dict[Name, RetryPolicy] = {}
    models: Annotated[dict[RouteName, Route], Field(min_length=1)]
    pricing: dict[str, Price] = {}
    projects: dict[Name, Project] = {}
    keys: list[Key] = []

    def problems(self) -> list[tuple[Path, str]]:
        """Cross-reference errors, each with the YAML path it concerns."""
        out: list[tuple[Path, str]] = []
        if self.cache.backend == "redis" and self.state.backend != "redis":
            out.append(
                (("cache", "backend"), "'redis' uses state's Redis: set state.backend redis")
            )
        for route_name, route in self.models.items():
            wildcard = route_name.endswith("/*")
            extra = [route.content_filter_fallback] if route.content_filter_fallback else []
            for i, target in enumerate([*route.targets, *extra]):
                where: Path = (
                    ("models", route_name, "targets", i)
                    if i < len(route.targets)
                    else ("models", route_name, "content_filter_fallback")
                )
                if target.model == "*" and not wildcard:
                    out.append(((*where, "model"), "model '*' needs a wildcard route ('prefix/*')"))
                if target.provider not in self.providers:
                    out.append(
                        (
                            (*where, "provider"),
                            f"unknown provider {target.provider!r}"
                            f"{_suggest(target.provider, self.providers)}",
                        )
                    )
            if route.retry is not None and route.retry not in self.retry_policies:
                out.append(
                    (
                        ("models", route_name, "retry"),
                        f"unknown retry policy {route.retry!r}"
                        f"{_suggest(route.retry, self.retry_policies)}",
                    )
                )
            if route.strategy == "weighted" and not any(t.weight for t in route.targets):
                out.append((("models", route_name, "targets"), "all weights are 0"))
            out += self._check_semantic(("models", route_name, "cache"), route.cache)
        for project_name, project in self.projects.items():
            out += self._check_models(("projects", project_name, "models"), project.models)
            out += _duplicate_windows(("projects", project_name, "budgets"), project.budgets)
            out += self._check_semantic(("projects", project_name, "cache"), project.cache)
            for provider in project.provider_keys:
                if provider not in self.providers:
                    out.append(
                        (
                            ("projects", project_name, "provider_keys", provider),
                            f"unknown provider {provider!r}{_suggest(provider, self.providers)}",
                        )
                    )
        seen_ids: dict[str, int] = {}
        seen_digests: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            if key.project not in self.projects:
                out.append(
                    (
                        ("keys", i, "project"),
                        f"unknown project {key.project!r}{_suggest(key.project, self.projects)}",
                    )
                )
            out += self._check_models(("keys", i, "models"), key.models)
            out += self._check_models(("keys", i, "route_rate_limits"), list(key.route_rate_limits))
            out += _duplicate_windows(("keys", i, "budgets"), key.budgets)
            if key.id in seen_ids:
                out.append((("keys", i, "id"), f"duplicate key id (also keys[{seen_ids[key.id]}])"))
            seen_ids.setdefault(key.id, i)
            if key.sha256 in seen_digests:
                out.append(
                    (
                        ("keys", i, "sha256"),
                        f"the same digest as keys[{seen_digests[key.sha256]}]",
                    )
                )
            seen_digests.setdefault(key.sha256, i)
        return out

    def _check_semantic(self, path: Path, cache: RouteCache | None) -> list[tuple[Path, str]]:
        if cache is None or cache.semantic is None:
            return []
        name = cache.semantic.embeddings
        where: Path = (*path, "semantic", "embeddings")
        if name.endswith("/*"):
            return [(where, "the embeddings route must be a plain name, not a wildcard")]
        if name not in self.models:
            return [(where, f"unknown model {name!r}{_suggest(name, self.models)}")]
        return []

    def _check_models(self, path: Path, names: list[str] | None) -> list[tuple[Path, str]]:
        return [
            ((*path, j), f"unknown model {name!r}{_suggest(name, self.models)}")
            for j, name in enumerate(names or ())
            if name not in self.models
        ]


def _duplicate_windows(path: Path, budgets: list[Budget]) -> list[tuple[Path, str]]:
    """One budget per window: two would share (and double-count) one counter."""
    out: list[tuple[Path, str]] = []
    seen: dict[str, int] = {}
    for j, budget in enumerate(budgets):
        if budget.window in seen:
            out.append(
                (
                    (*path, j, "window"),
                    f"a second '{budget.window}' budget (also [{seen[budget.window]}]): "
                    "put usd and tokens in one entry",
                )
            )
        seen.setdefault(budget.window, j)
    return out


def _suggest(name: str, known: object) -> str:
    import difflib

    names = [str(n) for n in known]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def compile_name_pattern() -> re.Pattern[str]:
    return re.compile(_NAME_RE)
