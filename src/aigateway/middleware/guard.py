"""Guardrails on the request path: after routing, before limits and budgets.

The rules for a request merge its project's, its key's and its route's
``guardrails`` (resolved once per key and route). Every text a caller sends
(message contents, text parts, an Anthropic caller's system prompt and tool
results) is scanned; redactions change what goes upstream; a block is a 400
naming the rule. With ``responses: true`` answers are scanned too, whole ones here
and streamed ones chunk by chunk (``guard_stream``). Hits are counted per rule and
action and recorded in the prompt log, never the matched text.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from aigateway.config.model import GatewayConfig, Key
from aigateway.errors import GuardrailBlocked
from aigateway.guard import Blocked, Rules, compile_rules, merge
from aigateway.guard_stream import AnthropicStreamGuard, ChatStreamGuard
from aigateway.metrics import Metrics
from aigateway.pipeline import Handler, JsonReply, Reply, RequestContext, StreamReply

Hits = list[tuple[str, str]]


class Guard:
    def __init__(self, config: GatewayConfig, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self._rules: dict[tuple[str, str], Rules | None] = {}

    def applies(self, key: Key, route: str) -> bool:
        return self._rules_for(key, route) is not None

    def _for(self, ctx: RequestContext) -> Rules | None:
        return None if ctx.key is None else self._rules_for(ctx.key, ctx.route_name or "")

    def _rules_for(self, key: Key, route: str) -> Rules | None:
        cache_key = (key.id, route)
        if cache_key not in self._rules:  # keys x routes: bounded by the config
            project = self._config.projects.get(key.project)
            route_cfg = self._config.models.get(route)
            self._rules[cache_key] = compile_rules(
                merge(
                    project.guardrails if project is not None else None,
                    key.guardrails,
                    route_cfg.guardrails if route_cfg is not None else None,
                )
            )
        return self._rules[cache_key]

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        rules = self._for(ctx)
        if rules is None:
            return await call_next(ctx)
        hits: Hits = []
        try:
            _walk_chat(ctx.body, rules, hits)
            if ctx.anthropic_body is not None:  # what an Anthropic target gets as is
                _walk_anthropic(ctx.anthropic_body, rules, [])
        except Blocked as blocked:
            self._record(ctx, hits, "request")
            raise GuardrailBlocked(
                f"The request was blocked by the gateway's '{blocked.rule}' guardrail."
            ) from None
        self._record(ctx, hits, "request")
        reply = await call_next(ctx)
        if not rules.responses:
            return reply
        if isinstance(reply, StreamReply):
            self._watch(ctx, reply, rules)
        elif reply.status == 200:
            found: Hits = []
            reply = _answer(reply, rules, found, ctx.reply_format == "anthropic")
            self._record(ctx, found, "response")
        return reply

    def _watch(self, ctx: RequestContext, reply: StreamReply, rules: Rules) -> None:
        """Check a streamed answer read by read; its hits are recorded at the end
        (before the prompt log's row, which is written by an outer middleware).

        No closures here: the hooks hold the stream, never the reply that holds
        them, and compiled, a closure holds every variable its function shares
        with closures (the guard that holds it, too). A cycle would leave each
        request's objects to the cyclic garbage collector."""
        watch = (
            AnthropicStreamGuard(rules)
            if ctx.reply_format == "anthropic"
            else ChatStreamGuard(rules, reply.stream)
        )
        reply.on_batch.append(watch)
        reply.on_end.append(partial(self._streamed, ctx, watch))

    def _streamed(
        self,
        ctx: RequestContext,
        watch: AnthropicStreamGuard | ChatStreamGuard,
        status: int,
        error: str | None,
    ) -> None:
        self._record(ctx, watch.hits(), "response")

    def _record(self, ctx: RequestContext, hits: Hits, direction: str) -> None:
        project = ctx.project_name or "-"
        for rule, action in hits:
            self._metrics.guardrail_hits.inc((project, rule, action, direction))
            ctx.guardrail_hits.append(f"{direction}:{rule}:{action}")


def _scan_parts(content: Any, rules: Rules, hits: Hits, text_key: str = "text") -> Any:
    if isinstance(content, str):
        return rules.scan(content, hits)
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get(text_key), str):
                part[text_key] = rules.scan(part[text_key], hits)
            if isinstance(part, dict) and part.get("type") == "tool_result":
                part["content"] = _scan_parts(part.get("content"), rules, hits)
    return content


def _walk_chat(body: dict[str, Any], rules: Rules, hits: Hits) -> None:
    for message in body.get("messages") or ():
        if isinstance(message, dict) and "content" in message:
            message["content"] = _scan_parts(message["content"], rules, hits)


def _walk_anthropic(body: dict[str, Any], rules: Rules, hits: Hits) -> None:
    if "system" in body:
        body["system"] = _scan_parts(body["system"], rules, hits)
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            message["content"] = _scan_parts(message.get("content"), rules, hits)


def _answer(reply: JsonReply, rules: Rules, hits: Hits, anthropic: bool) -> JsonReply:
    body = reply.body
    try:
        if anthropic:
            body["content"] = _scan_parts(body.get("content"), rules, hits)
        else:
            for choice in body.get("choices") or ():
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    message["content"] = rules.scan(message["content"], hits)
    except Blocked as blocked:
        notice = f"[answer withheld by the gateway's '{blocked.rule}' guardrail]"
        _withhold(body, notice, anthropic)
    return JsonReply(reply.status, body) if hits else reply


def _withhold(body: dict[str, Any], notice: str, anthropic: bool) -> None:
    if anthropic:
        body["content"] = [{"type": "text", "text": notice}]
        body["stop_reason"] = "refusal"
        return
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            choice["message"] = {"role": "assistant", "content": notice, "refusal": notice}
            choice["finish_reason"] = "content_filter"
