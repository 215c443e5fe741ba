"""What a request cost, in US dollars, as ``Decimal``.

Prices come from, in order:

1. ``pricing:`` in gateway.yaml, keyed ``"<provider name>/<model>"`` or ``"<model>"``
   (USD per million tokens), for local models and negotiated rates;
2. genai-prices (bundled data, offline), matched by the provider's base URL and
   the model the provider says served the request (a dated snapshot is priced as
   itself, not as the alias the caller used);
3. otherwise the model is *unpriced*: cost ``None`` (the request is never failed
   for it), a warning once per model, and a metric.

genai-prices knows providers by their public API hosts (``https://api.openai.com``
and ~60 more), so a base URL at an IP address, ``localhost``, a one-label name (a
Kubernetes or Compose service) or a local-only suffix (``.local``, ``.internal``,
``.svc``, ...) is never looked up there: a self-hosted server's models are
unpriced without loading its data (~5.6 MiB of RSS, ~30 ms on the event loop).

The built-in ``mock`` provider costs $0 unless overridden.

genai-prices takes ~50 µs per lookup; the gateway resolves each (provider, model)
once an hour and computes costs from the resolved per-token rates (a few Decimal
operations). Tiered prices (e.g. long-context tiers) go through genai-prices'
own calculation, exactly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

from aigateway.config.model import Price
from aigateway.usage import Usage

MILLION = Decimal(1_000_000)
CACHE_TTL_S = 3600.0
MAX_CACHED = 4096
#: names only a local resolver answers (RFC 6761, 6762, 8375; Kubernetes services)
LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".home.arpa", ".lan", ".svc")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens. ``exact`` computes tiered prices when set."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    exact: Callable[[Usage], Decimal] | None = None
    #: tiered prices: the highest (input, output) rate of any tier, for reserving
    #: budget before the real size is known
    ceiling: tuple[Decimal, Decimal] | None = None

    def cost(self, usage: Usage) -> Decimal:
        if self.exact is not None:
            return self.exact(usage)
        return (
            usage.uncached_input_tokens * self.input
            + usage.cached_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.completion_tokens * self.output
        ) / MILLION

    def worst_case(self) -> tuple[Decimal, Decimal]:
        """The most one input and one output token can cost (USD per million)."""
        if self.ceiling is not None:
            return self.ceiling
        return max(self.input, self.cache_write), self.output


FREE = Rates(Decimal(0), Decimal(0), Decimal(0), Decimal(0))


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


class PriceBook:
    def __init__(
        self,
        overrides: Mapping[str, Price],
        *,
        clock: Callable[[], float],
        on_unpriced: Callable[[str, str], None],
    ) -> None:
        self._overrides = {name: rates_from_price(p) for name, p in overrides.items()}
        self._clock = clock
        self._on_unpriced = on_unpriced
        self._cache: dict[tuple[str, str], tuple[float, Rates | None]] = {}

    def cost(self, provider: str, base_url: str | None, model: str, usage: Usage) -> Decimal | None:
        rates = self.rates(provider, base_url, model)
        return None if rates is None else rates.cost(usage)

    def rates(self, provider: str, base_url: str | None, model: str) -> Rates | None:
        """``base_url`` None means the built-in mock provider."""
        key = (provider, model)
        now = self._clock()
        found = self._cache.get(key)
        if found is not None and now - found[0] < CACHE_TTL_S:
            return found[1]
        rates = self._resolve(provider, base_url, model)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()  # models come from upstream answers: stay bounded
        self._cache[key] = (now, rates)
        if rates is None:
            self._on_unpriced(provider, model)
        return rates

    def _resolve(self, provider: str, base_url: str | None, model: str) -> Rates | None:
        override = self._overrides.get(f"{provider}/{model}") or self._overrides.get(model)
        if override is not None:
            return override
        if base_url is None:
            return FREE
        if not may_be_public(base_url):
            return None
        return _genai_rates(base_url, model)


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


def _genai_rates(base_url: str, model: str) -> Rates | None:
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    try:
        found = calc_price(
            GUsage(input_tokens=0, output_tokens=0), model, provider_api_url=base_url
        )
    except LookupError:
        return None
    price = found.model_price
    fields = (price.input_mtok, price.output_mtok, price.cache_read_mtok, price.cache_write_mtok)
    flat = [f if isinstance(f, Decimal) else None for f in fields]
    if all(f is None or isinstance(f, Decimal) for f in fields):
        input_rate, output_rate, read_rate, write_rate = flat
        base = input_rate or Decimal(0)
        return Rates(
            input=base,
            output=output_rate or Decimal(0),
            cache_read=read_rate if read_rate is not None else base,
            cache_write=write_rate if write_rate is not None else base,
        )

    def exact(usage: Usage) -> Decimal:
        result = price.calc_price(_genai_usage(usage))
        return Decimal(result["total_price"])

    ceiling = (_highest(price.input_mtok, price.cache_write_mtok), _highest(price.output_mtok))
    return Rates(Decimal(0), Decimal(0), Decimal(0), Decimal(0), exact=exact, ceiling=ceiling)


def _highest(*prices: Any) -> Decimal:
    """The top rate of flat or tiered genai-prices fields (None counts as 0)."""
    top = Decimal(0)
    for p in prices:
        if isinstance(p, Decimal):
            top = max(top, p)
        elif p is not None:  # TieredPrices: a base and tiers above it
            top = max(top, p.base, *(tier.price for tier in p.tiers))
    return top


def _genai_usage(usage: Usage) -> Any:
    from genai_prices import Usage as GUsage

    return GUsage(
        input_tokens=usage.prompt_tokens,
        cache_read_tokens=usage.cached_tokens or None,
        cache_write_tokens=usage.cache_write_tokens or None,
        output_tokens=usage.completion_tokens,
    )
