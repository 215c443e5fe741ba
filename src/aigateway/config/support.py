"""Parts of the configuration contract this version validates but does not act on
yet, and limits of what it does act on.

``aigateway check`` and ``aigateway serve`` print these as warnings, so nobody
believes something is enforced (or kept) when it is not.
"""

from __future__ import annotations

from aigateway.config.model import GatewayConfig


def unenforced(config: GatewayConfig) -> list[str]:
    out: list[str] = []
    if config.prompt_log is not None:
        out.append("prompt_log: the SQLite prompt log is not written yet")
    for name, project in config.projects.items():
        if project.prompt_log is not None:
            out.append(f"projects.{name}.prompt_log: the SQLite prompt log is not written yet")
    has_budgets = any(p.budgets for p in config.projects.values()) or any(
        k.budgets for k in config.keys
    )
    if has_budgets and config.state.backend == "memory":
        out.append(
            "state.backend: with 'memory', budget spend lives in this process only and "
            "starts from zero after a restart; use 'redis' to keep it"
        )
    return out
