"""Budget spend rebuilt from the prompt log at start-up (memory state backend).

Counters in memory die with the process; the prompt log does not. For every
budget that applies now, the spend of its current window is summed from the log's
rows (``cost_nano`` for USD, prompt + output tokens for tokens) of the key or
project, so a restart does not hand out a budget twice.
"""

from __future__ import annotations

from pathlib import Path

from aigateway import limits
from aigateway.config.model import GatewayConfig
from aigateway.policy import compile_policies


def spend_to_restore(
    config: GatewayConfig, paths: list[Path], now: float
) -> list[tuple[str, int, float | None]]:
    """(budget counter, amount spent, window end) for every budget of ``config``."""
    from aigateway import logread  # sqlite3: loaded only by gateways that have a log

    out: list[tuple[str, int, float | None]] = []
    by_start: dict[float, dict[tuple[str, str], tuple[int, int]]] = {}
    done: set[str] = set()
    for policy in compile_policies(config).values():
        for scope in policy.scopes:
            kind, _, name = scope.name.partition(":")
            for rule in scope.budgets:
                window = limits.budget_window(rule.window, now)
                base = f"{rule.base}:{window.id}"
                if base in done:
                    continue  # a project's budget is shared by its keys: count it once
                done.add(base)
                spend = by_start.get(window.starts)
                if spend is None:
                    spend = by_start[window.starts] = logread.spend_since(paths, window.starts)
                nano, tokens = spend.get((kind, name), (0, 0))
                if rule.usd_nano is not None and nano:
                    out.append((base + ":usd", nano, window.ends))
                if rule.tokens is not None and tokens:
                    out.append((base + ":tokens", tokens, window.ends))
    return out
