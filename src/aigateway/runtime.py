"""The runtime: one immutable snapshot of everything a config implies.

A request reads ``holder.current`` once and finishes on that snapshot; a reload
builds a complete new snapshot and swaps one reference, so no request ever sees
half of one config and half of another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aigateway.accesslog import AccessLog
from aigateway.cache_store import CacheStore
from aigateway.config.load import LoadedConfig
from aigateway.config.model import (
    AnthropicProvider,
    AzureProvider,
    GatewayConfig,
    GeminiProvider,
    MockProvider,
    ProviderConfig,
)
from aigateway.keys import KeyIndex
from aigateway.metrics import Metrics
from aigateway.middleware.account import Account
from aigateway.middleware.auth import Authenticate
from aigateway.middleware.cache import Cache
from aigateway.middleware.govern import Govern, Spawn
from aigateway.middleware.guard import Guard
from aigateway.middleware.observe import Observe
from aigateway.middleware.parse import ParseBody
from aigateway.middleware.record import Record
from aigateway.middleware.route import ResolveRoute
from aigateway.middleware.semantic import SemanticLookup
from aigateway.mock_transport import MockTransport
from aigateway.pipeline import ByKeyAndRoute, Handler, Middleware, Selective, build_chain
from aigateway.policy import compile_policies
from aigateway.pricing import PriceBook, PriceTables, provider_source
from aigateway.promptlog import PromptLog
from aigateway.providers.anthropic import AnthropicAdapter
from aigateway.providers.azure import AzureAdapter
from aigateway.providers.gemini import GeminiAdapter
from aigateway.providers.mock import MockEngine
from aigateway.providers.openai import OpenAIAdapter
from aigateway.proxy import ProviderHandle, Proxy
from aigateway.quota import LimitStore
from aigateway.routing import RoutingState
from aigateway.semantic_store import SemanticStore
from aigateway.tokens import Tokenizer
from aigateway.upstream import Transport


@dataclass(frozen=True)
class Runtime:
    loaded: LoadedConfig
    keys: KeyIndex
    providers: Mapping[str, ProviderHandle]
    #: the whole pipeline for a chat or embeddings request
    handler: Handler
    #: when this snapshot was built (unix seconds); /v1/models shows it as ``created``
    created: int

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config


def build_runtime(
    loaded: LoadedConfig,
    *,
    http: Transport,
    metrics: Metrics,
    access_log: AccessLog,
    routing: RoutingState,
    store: LimitStore,
    tokenizer: Tokenizer,
    spawn: Spawn,
    prompt_log: PromptLog | None = None,
    cache: CacheStore | None = None,
    semantic: SemanticStore | None = None,
    on_unpriced: Callable[[str, str], None] = lambda provider, model: None,
    price_tables: PriceTables | None = None,
) -> Runtime:
    config = loaded.config
    keys = KeyIndex(config.keys, config.projects)
    providers = {name: _provider(name, p, http) for name, p in config.providers.items()}
    prices = PriceBook(
        config.pricing, clock=time.monotonic, on_unpriced=on_unpriced, tables=price_tables
    )
    sources = {name: provider_source(p) for name, p in config.providers.items()}
    account = Account(prices, sources)
    middlewares: list[Middleware] = []
    if prompt_log is not None and config.prompt_log is not None:
        middlewares.append(Record(prompt_log, config, spawn))  # outermost: sees the end
    middlewares += [
        Observe(metrics, access_log),
        account,
        Authenticate(keys),
        ParseBody(),
        ResolveRoute(config.models),
    ]
    # Guardrails, limits and caches apply to some keys and routes only: requests of
    # the others skip them (no layer at all when the config has none of them).
    selective: list[Selective] = []
    if _has_guardrails(config):
        selective.append(Guard(config, metrics))
    policies = compile_policies(config)
    if policies:
        selective.append(
            Govern(
                policies,
                store,
                tokenizer=tokenizer,
                worst_price=account.worst_case,
                cost=account.total,
                settings=config.governance,
                metrics=metrics,
                spawn=spawn,
                routes=config.models,
            )
        )
    proxy = Proxy(providers, routing, config.retry_policies, tokenizer)
    if cache is not None and _has_cache(config):
        lookup = None
        if semantic is not None and _has_semantic(config):
            lookup = SemanticLookup(
                semantic, config.models, embed=proxy, cost=account.cost, metrics=metrics
            )
        selective.append(
            Cache(config, cache, metrics=metrics, cost=account.cost, spawn=spawn, semantic=lookup)
        )
    chain = build_chain(middlewares, ByKeyAndRoute(selective, proxy) if selective else proxy)
    return Runtime(
        loaded=loaded, keys=keys, providers=providers, handler=chain, created=int(time.time())
    )


def _provider(name: str, cfg: ProviderConfig, http: Transport) -> ProviderHandle:
    if isinstance(cfg, AnthropicProvider):
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        return ProviderHandle(
            name,
            AnthropicAdapter(cfg, api_key=key, clock=time.time),
            http,
            cfg.timeouts,
            (key,) if key else (),
        )
    if isinstance(cfg, GeminiProvider):
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        return ProviderHandle(
            name,
            GeminiAdapter(cfg, api_key=key, clock=time.time),
            http,
            cfg.timeouts,
            (key,) if key else (),
        )
    if isinstance(cfg, AzureProvider):
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        return ProviderHandle(
            name, AzureAdapter(cfg, api_key=key), http, cfg.timeouts, (key,) if key else ()
        )
    if isinstance(cfg, MockProvider):
        return ProviderHandle(
            name,
            OpenAIAdapter(f"mock://{name}", api_key=None, headers=cfg.headers),
            MockTransport(MockEngine(cfg)),
            cfg.timeouts,
            (),
        )
    secret = cfg.api_key.get_secret_value() if cfg.api_key else None
    return ProviderHandle(
        name,
        OpenAIAdapter(
            cfg.base_url,
            api_key=secret,
            headers=cfg.headers,
            stream_usage=cfg.stream_usage,
            max_tokens_field=cfg.max_tokens_field,
        ),
        http,
        cfg.timeouts,
        (secret,) if secret else (),
    )


def _has_cache(config: GatewayConfig) -> bool:
    return any(r.cache for r in config.models.values()) or any(
        p.cache for p in config.projects.values()
    )


def _has_semantic(config: GatewayConfig) -> bool:
    caches = [r.cache for r in config.models.values()] + [p.cache for p in config.projects.values()]
    return any(c is not None and c.semantic is not None for c in caches)


def _has_guardrails(config: GatewayConfig) -> bool:
    return (
        any(p.guardrails for p in config.projects.values())
        or any(k.guardrails for k in config.keys)
        or any(r.guardrails for r in config.models.values())
    )


class RuntimeHolder:
    """Holds the serving snapshot; ``swap`` is the only way to change it."""

    def __init__(self, runtime: Runtime) -> None:
        self._current = runtime

    @property
    def current(self) -> Runtime:
        return self._current

    def swap(self, runtime: Runtime) -> Runtime:
        old, self._current = self._current, runtime
        return old
