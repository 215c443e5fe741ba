"""What each request cost: ``x-aigateway-cost-usd``, ``usage.cost``, ``ctx.cost_usd``.

Runs inside ``Observe`` (which records the cost in metrics and the access log).
A whole answer gets the header and ``usage.cost`` in its body; a stream carries
``usage.cost`` in its usage chunk when the caller asked for one
(``stream_options.include_usage``), since headers are gone by then.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from aigateway.pipeline import Handler, JsonReply, Reply, RequestContext, StreamReply
from aigateway.pricing import PriceBook
from aigateway.providers.base import Batch, Chunk
from aigateway.usage import Usage


def usd(cost: Decimal) -> str:
    """A cost as plain decimal text, no exponent (header values, logs)."""
    return format(cost.normalize(), "f") if cost else "0"


class Account:
    def __init__(self, prices: PriceBook, sources: Mapping[str, str | None]) -> None:
        self._prices = prices
        #: provider name → its price source (``pricing.provider_source``)
        self._sources = sources

    def cost(self, ctx: RequestContext, usage: Usage | None) -> Decimal | None:
        if usage is None or ctx.target is None:
            return None
        provider = ctx.target.provider
        model = ctx.served_model or ctx.attempts[-1].model
        return self._prices.cost(provider, self._sources.get(provider), model, usage)

    def total(self, ctx: RequestContext, usage: Usage | None) -> Decimal | None:
        """What the request cost: its answer (nothing, from the cache) and the
        semantic cache's embedding of it. None while the answer's price is unknown."""
        if ctx.cache_hit:
            answer: Decimal | None = Decimal(0)
        elif usage is None:  # no answer came: only the lookup cost anything
            return ctx.lookup_cost_usd or None
        else:
            answer = self.cost(ctx, usage)
        return None if answer is None else answer + ctx.lookup_cost_usd

    def worst_case(self, provider: str, model: str) -> tuple[Decimal, Decimal] | None:
        """The most an input and an output token of this model can cost (USD/Mtok)."""
        rates = self._prices.rates(provider, self._sources.get(provider), model)
        return None if rates is None else rates.worst_case()

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        try:
            reply = await call_next(ctx)
        except BaseException:
            if ctx.cost_usd is None and ctx.lookup_cost_usd:
                ctx.cost_usd = ctx.lookup_cost_usd  # the answer failed; its lookup was paid
            raise
        if isinstance(reply, StreamReply):
            _stream_hooks(self, ctx, reply)
            return reply
        cost = ctx.cost_usd
        if cost is None:  # (limits and budgets, inside, may have priced it already)
            cost = ctx.cost_usd = self.total(ctx, ctx.usage)
        if cost is None:
            return reply
        ctx.response_headers["x-aigateway-cost-usd"] = usd(cost)
        usage = reply.body.get("usage")
        if not isinstance(usage, dict):
            return reply
        number = float(cost)
        raw = reply.raw
        if raw is not None and "cost" not in usage and raw.count(b'"usage"') == 1:
            # The only "usage" key is the top-level one (JSON strings escape quotes):
            # put the cost first in its object, without re-encoding the whole body.
            at = raw.find(b"{", raw.find(b'"usage"') + 7) + 1
            if at > 0:
                usage["cost"] = number
                spliced = raw[:at] + b'"cost":' + repr(number).encode() + b"," + raw[at:]
                return JsonReply(reply.status, reply.body, spliced)
        usage["cost"] = number  # replaces a provider's own figure: ours is what we bill
        return JsonReply(reply.status, reply.body)  # re-encoded with the cost


def _stream_hooks(account: Account, ctx: RequestContext, reply: StreamReply) -> None:
    """Put ``usage.cost`` in the stream's usage chunk; price the stream when it ends."""

    def on_batch(batch: Batch) -> None:
        for part in batch.parts:
            if isinstance(part, Chunk) and part.data.get("usage"):
                usage = part.data["usage"]
                cost = account.total(ctx, Usage.from_openai(usage))
                if cost is not None and isinstance(usage, dict):
                    usage["cost"] = float(cost)
                    part.raw = None  # re-encoded: the chunk changed

    def on_end(status: int, error: str | None) -> None:
        ctx.cost_usd = account.total(ctx, ctx.usage)  # ctx.usage: set when the stream closed

    reply.on_batch.append(on_batch)
    reply.on_end.append(on_end)
