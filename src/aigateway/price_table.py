"""Compact price tables: one provider's models, their match rules and their rates.

A table is what ``price_export`` draws out of genai-prices for one price source
(a base URL or a genai-prices provider id), as plain JSON data; this module reads
it, finds the model an upstream named, and gives its :class:`Rates` at a moment.
The gateway thus holds the prices of the providers it is configured for
(~0.4 MiB of RSS for OpenAI's) instead of genai-prices' package and all its data
(~5.3 MiB of RSS).

The lookup is genai-prices' own, rule for rule: the provider's models in order,
then those of its fallback providers (one step), the first whose ``match``
clause accepts the lower-cased name; failing that, once more with a compact date
suffix (``-20251211``) rewritten as ``-2025-12-11``. A model's conditional
prices are tried last to first, the first active one wins, else the first.

Format (``FORMAT``)::

    {"provider": "openai",
     "models": [{"id": "gpt-4o",
                 "match": {"or": [{"equals": "gpt-4o"}, {"starts_with": "gpt-4o-2024"}]},
                 "prices": [{"when": null | {"from": "2025-01-01"}
                                         | {"daily": ["16:30:00", "00:30:00"]},
                             "tiers": [[above, request, input, cache_read,
                                        cache_write, output], ...]}]},
                {"id": "...", "match": ..., "error": "why it has no rates"}]}

A tier's rates apply when the prompt (all input tokens) is over ``above``
tokens (the first tier has ``above`` -1); ``request`` is USD per request, the
rest USD per million tokens, as decimal strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final

from aigateway.usage import Usage

FORMAT: Final = 1
MILLION = Decimal(1_000_000)
_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


class TableError(ValueError):
    """A table that does not follow the format."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each disjoint bucket, and per request.

    ``tiers`` hold the rates of longer prompts: ``(above, rates)`` in ascending
    order, each applying when the prompt has more than ``above`` tokens.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    request: Decimal = Decimal(0)
    tiers: tuple[tuple[int, Rates], ...] = ()

    def at(self, prompt_tokens: int) -> Rates:
        """The rates a prompt of this size is billed at."""
        for above, rates in reversed(self.tiers):
            if prompt_tokens > above:
                return rates
        return self

    def cost(self, usage: Usage) -> Decimal:
        r = self.at(usage.prompt_tokens) if self.tiers else self
        tokens = (
            usage.uncached_input_tokens * r.input
            + usage.cached_tokens * r.cache_read
            + usage.cache_write_tokens * r.cache_write
            + usage.completion_tokens * r.output
        ) / MILLION
        return tokens + r.request if r.request else tokens

    def worst_case(self) -> tuple[Decimal, Decimal]:
        """The most one input and one output token can cost (USD per million), in
        any tier: what a budget reserves before the real size is known."""
        every = (self, *(rates for _, rates in self.tiers))
        return (
            max(max(r.input, r.cache_write) for r in every),
            max(r.output for r in every),
        )


FREE = Rates(Decimal(0), Decimal(0), Decimal(0), Decimal(0))

Clause = Callable[[str], bool]


def _clause(raw: Any) -> Clause:
    """A genai-prices match clause as a predicate over a lower-cased model name."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise TableError(f"a match clause is an object of one key, not {raw!r:.80}")
    ((kind, arg),) = raw.items()
    if kind in ("or", "and"):
        if not isinstance(arg, list) or not arg:
            raise TableError(f"{kind!r} takes a non-empty list")
        parts = tuple(_clause(part) for part in arg)
        if kind == "or":
            return lambda name: any(part(name) for part in parts)
        return lambda name: all(part(name) for part in parts)
    if not isinstance(arg, str):
        raise TableError(f"{kind!r} takes a string")
    if kind == "regex":
        pattern = re.compile(arg)
        return lambda name: pattern.search(name) is not None
    text = arg.lower()
    if kind == "equals":
        return lambda name: name == text
    if kind == "starts_with":
        return lambda name: name.startswith(text)
    if kind == "ends_with":
        return lambda name: name.endswith(text)
    if kind == "contains":
        return lambda name: text in name
    raise TableError(f"unknown match clause {kind!r}")


def _when(raw: Any) -> Callable[[datetime], bool] | None:
    """A price's constraint as a predicate over a moment in UTC (None: always)."""
    if raw is None:
        return None
    if isinstance(raw, dict) and set(raw) == {"from"}:
        start = date.fromisoformat(raw["from"])
        return lambda now: now.date() >= start
    if isinstance(raw, dict) and set(raw) == {"daily"} and len(raw["daily"]) == 2:
        begin, end = (time.fromisoformat(t) for t in raw["daily"])
        if end < begin:  # across midnight
            return lambda now: now.time() >= begin or now.time() < end
        return lambda now: begin <= now.time() < end
    raise TableError(f"unknown price constraint {raw!r:.80}")


def _decimal(raw: Any) -> Decimal:
    if not isinstance(raw, str):
        raise TableError(f"a price is a decimal string, not {raw!r:.40}")
    value = Decimal(raw)
    if not value.is_finite() or value < 0:
        raise TableError(f"a price is finite and not negative, not {raw!r:.40}")
    return value


def _rates(raw: Any) -> Rates:
    if not isinstance(raw, list) or not raw:
        raise TableError("a price has a non-empty list of tiers")
    tiers: list[tuple[int, Rates]] = []
    for tier in raw:
        if not isinstance(tier, list) or len(tier) != 6 or type(tier[0]) is not int:
            raise TableError(
                f"a tier is [above, request, input, read, write, output]: {tier!r:.80}"
            )
        request, input_rate, read, write, output = (_decimal(v) for v in tier[1:])
        if tiers and tier[0] <= tiers[-1][0]:
            raise TableError("tiers go up")
        tiers.append((tier[0], Rates(input_rate, output, read, write, request)))
    if tiers[0][0] != -1:
        raise TableError("the first tier starts at -1")
    first = tiers[0][1]
    if len(tiers) == 1:
        return first
    return Rates(
        first.input,
        first.output,
        first.cache_read,
        first.cache_write,
        first.request,
        tuple(tiers[1:]),
    )


@dataclass(frozen=True, slots=True)
class TableModel:
    id: str
    match: Clause
    #: (constraint, rates), tried last to first; empty: ``error`` says why
    prices: tuple[tuple[Callable[[datetime], bool] | None, Rates], ...]
    error: str | None = None

    def rates(self, now: datetime) -> Rates | None:
        if not self.prices:
            return None
        for when, rates in reversed(self.prices):
            if when is None or when(now):
                return rates
        return self.prices[0][1]


class PriceTable:
    """One price source's models, in genai-prices' lookup order."""

    def __init__(self, provider: str, models: Sequence[TableModel]) -> None:
        #: genai-prices' provider id
        self.provider = provider
        self.models = tuple(models)

    @classmethod
    def parse(cls, raw: Any) -> PriceTable:
        if not isinstance(raw, dict) or not isinstance(raw.get("provider"), str):
            raise TableError("a table is an object with a provider id")
        models = raw.get("models")
        if not isinstance(models, list):
            raise TableError("a table has a list of models")
        try:
            return cls(raw["provider"], [_model(m) for m in models])
        except TableError:
            raise
        except (ValueError, TypeError, ArithmeticError, re.error) as exc:
            raise TableError(f"{type(exc).__name__}: {exc}") from exc

    def find(self, model: str) -> TableModel | None:
        name = model.lower()
        found = self._first(name)
        if found is None:
            dashed = _COMPACT_DATE.sub(_dash_date, name)
            if dashed != name:
                found = self._first(dashed)
        return found

    def _first(self, name: str) -> TableModel | None:
        for model in self.models:
            if model.match(name):
                return model
        return None

    def rates(self, model: str, now: datetime | None = None) -> Rates | None:
        """The model's rates at ``now`` (UTC; default: this moment); None when the
        table has no such model or no rates for it."""
        found = self.find(model)
        if found is None:
            return None
        return found.rates(now if now is not None else datetime.now(UTC))


def _model(raw: Any) -> TableModel:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise TableError("a model is an object with an id")
    match = _clause(raw.get("match"))
    if "error" in raw:
        return TableModel(raw["id"], match, (), str(raw["error"]))
    prices = raw.get("prices")
    if not isinstance(prices, list) or not prices:
        raise TableError(f"model {raw['id']!r:.80} has no prices")
    found: list[tuple[Callable[[datetime], bool] | None, Rates]] = []
    for price in prices:
        if not isinstance(price, dict):
            raise TableError("a price is an object")
        found.append((_when(price.get("when")), _rates(price.get("tiers"))))
    return TableModel(raw["id"], match, tuple(found))


def _dash_date(m: re.Match[str]) -> str:
    year, month, day = int(m.group(2)), int(m.group(3)), int(m.group(4))
    try:
        date(year, month, day)
    except ValueError:
        return m.group(0)
    return f"-{year:04d}-{month:02d}-{day:02d}"


def parse_tables(raw: Mapping[str, Any]) -> dict[str, PriceTable | str]:
    """An export's tables by price source; a source genai-prices has no table for
    maps to the reason, as text."""
    if raw.get("format") != FORMAT or not isinstance(raw.get("tables"), dict):
        raise TableError(f"not a price table export of format {FORMAT}")
    out: dict[str, PriceTable | str] = {}
    for source, table in raw["tables"].items():
        if isinstance(table, dict) and set(table) == {"error"}:
            out[source] = str(table["error"])
        else:
            out[source] = PriceTable.parse(table)
    return out
