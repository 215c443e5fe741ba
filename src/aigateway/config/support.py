"""Limits of what a configuration does, printed as warnings by ``aigateway check``
and ``aigateway serve`` so nobody believes something is kept when it is not."""

from __future__ import annotations

from aigateway.config.model import GatewayConfig


def unenforced(config: GatewayConfig) -> list[str]:
    out: list[str] = []
    has_budgets = any(p.budgets for p in config.projects.values()) or any(
        k.budgets for k in config.keys
    )
    if has_budgets and config.state.backend == "memory" and config.prompt_log is None:
        out.append(
            "state.backend: with 'memory' and no prompt_log, budget spend lives in this "
            "process only and starts from zero after a restart; add a prompt_log (spend is "
            "rebuilt from it) or use 'redis'"
        )
    return out
