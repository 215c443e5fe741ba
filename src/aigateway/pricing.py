"""What a request cost, in US dollars, as ``Decimal``.

Prices come from, in order:

1. ``pricing:`` in gateway.yaml, keyed ``"<provider name>/<model>"`` or ``"<model>"``
   (USD per million tokens), for local models and negotiated rates;
2. genai-prices (bundled data, offline), for the provider's *price source* — its
   ``price_as:`` (a genai-prices provider id) or else its base URL — and the model
   the provider says served the request (a dated snapshot is priced as itself,
   not as the alias the caller used);
3. otherwise the model is *unpriced*: cost ``None`` (the request is never failed
   for it), a warning once per model, and a metric.

genai-prices is read through compact tables of the configured sources only
(``price_table``, drawn out of it in a child process by ``price_export``), not
imported: the gateway keeps ~0.4 MiB of RSS for OpenAI's instead of ~5.3 MiB.

genai-prices knows providers by their public API hosts (``https://api.openai.com``
and ~60 more), so a base URL at an IP address, ``localhost``, a one-label name (a
Kubernetes or Compose service) or a local-only suffix (``.local``, ``.internal``,
``.svc``, ...) is not a price source: a self-hosted server's models are unpriced
unless ``pricing:`` or ``price_as:`` says otherwise.

The built-in ``mock`` provider costs $0 unless overridden (or given ``price_as``).

The gateway resolves each (provider, model) once an hour and computes costs from
the resolved rates (a few Decimal operations).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

from aigateway.config.model import GatewayConfig, MockProvider, Price, ProviderConfig
from aigateway.price_export import is_url, load
from aigateway.price_table import FREE, PriceTable, Rates, TableError, parse_tables
from aigateway.usage import Usage

__all__ = (
    "FREE",
    "PriceBook",
    "PriceTables",
    "Rates",
    "may_be_public",
    "price_problems",
    "price_sources",
    "provider_source",
)

CACHE_TTL_S = 3600.0
MAX_CACHED = 4096
#: names only a local resolver answers (RFC 6761, 6762, 8375; Kubernetes services)
LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".svc")


def rates_from_price(price: Price) -> Rates:
    return Rates(
        input=price.input_per_mtok,
        output=price.output_per_mtok,
        cache_read=price.cached_input_per_mtok
        if price.cached_input_per_mtok is not None
        else price.input_per_mtok,
        cache_write=price.cache_write_per_mtok
        if price.cache_write_per_mtok is not None
        else price.input_per_mtok,
    )


def provider_source(provider: ProviderConfig) -> str | None:
    """Where a configured provider's prices come from: its ``price_as``, else its
    base URL (None: the built-in mock, free)."""
    if provider.price_as is not None:
        return provider.price_as
    return None if isinstance(provider, MockProvider) else provider.base_url


def price_sources(config: GatewayConfig) -> list[str]:
    """The config's price sources genai-prices may have a table for, once each."""
    found: dict[str, None] = {}
    for provider in config.providers.values():
        source = provider_source(provider)
        if source is not None and (not is_url(source) or may_be_public(source)):
            found[source] = None
    return list(found)


def price_problems(config: GatewayConfig, tables: PriceTables) -> list[str]:
    """``price_as`` values genai-prices has no provider for, by YAML path (loads
    the tables of the config's sources)."""
    tables.ensure(price_sources(config))
    problems = []
    for name, provider in config.providers.items():
        if provider.price_as is not None:
            table = tables.get(provider.price_as)
            if isinstance(table, str):
                problems.append(f"providers.{name}.price_as: {table}")
    return problems


class PriceTables:
    """genai-prices' tables of the price sources met so far, by source; a source
    it has none for maps to why. Outlives reloads (a table is loaded once)."""

    def __init__(
        self, loader: Callable[[list[str]], tuple[dict[str, Any], str | None]] = load
    ) -> None:
        self._loader = loader
        self._tables: dict[str, PriceTable | str] = {}

    def ensure(self, sources: Iterable[str]) -> str | None:
        """Load the tables not loaded yet (blocking: a child process, ~0.6 s).
        Returns why the child failed when the export ran in this process instead."""
        missing = [s for s in dict.fromkeys(sources) if s not in self._tables]
        if not missing:
            return None
        export, problem = self._loader(missing)
        try:
            found = parse_tables(export)
        except (TableError, TypeError, ValueError, KeyError) as exc:
            found, problem = {}, f"unreadable export: {exc}"
        self._tables.update({s: found.get(s, "not exported") for s in missing})
        return problem

    def get(self, source: str) -> PriceTable | str:
        """The source's table, or why there is none (loaded now if need be)."""
        if source not in self._tables:
            self.ensure([source])
        return self._tables[source]


class PriceBook:
    def __init__(
        self,
        overrides: Mapping[str, Price],
        *,
        clock: Callable[[], float],
        on_unpriced: Callable[[str, str], None],
        tables: PriceTables | None = None,
    ) -> None:
        self._overrides = {name: rates_from_price(p) for name, p in overrides.items()}
        self._tables = tables if tables is not None else PriceTables()
        self._clock = clock
        self._on_unpriced = on_unpriced
        self._cache: dict[tuple[str, str], tuple[float, Rates | None]] = {}

    def cost(self, provider: str, source: str | None, model: str, usage: Usage) -> Decimal | None:
        rates = self.rates(provider, source, model)
        return None if rates is None else rates.cost(usage)

    def rates(self, provider: str, source: str | None, model: str) -> Rates | None:
        """``source``: the provider's price source (``provider_source``); None
        means the built-in mock."""
        key = (provider, model)
        now = self._clock()
        found = self._cache.get(key)
        if found is not None and now - found[0] < CACHE_TTL_S:
            return found[1]
        rates = self._resolve(provider, source, model)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()  # models come from upstream answers: stay bounded
        self._cache[key] = (now, rates)
        if rates is None:
            self._on_unpriced(provider, model)
        return rates

    def _resolve(self, provider: str, source: str | None, model: str) -> Rates | None:
        override = self._overrides.get(f"{provider}/{model}") or self._overrides.get(model)
        if override is not None:
            return override
        if source is None:
            return FREE
        if is_url(source) and not may_be_public(source):
            return None
        table = self._tables.get(source)
        if isinstance(table, str):
            return None
        return table.rates(model, datetime.now(UTC))


def may_be_public(base_url: str) -> bool:
    """Whether genai-prices could know this base URL's provider (it knows them by
    their public API hosts): not for an IP address, ``localhost``, a one-label name
    or a local-only suffix."""
    try:
        host = (urlsplit(base_url).hostname or "").rstrip(".").lower()
    except ValueError:  # a malformed IPv6 literal
        return False
    if "." not in host:  # also IPv6 literals, and no host at all
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return not host.endswith(LOCAL_SUFFIXES)
    return False
