"""Parts of the configuration contract this version validates but does not act on yet.

``aigateway check`` and ``aigateway serve`` print these as warnings, so nobody
believes a limit is enforced when it is not.
"""

from __future__ import annotations

from aigateway.config.model import GatewayConfig


def unenforced(config: GatewayConfig) -> list[str]:
    out: list[str] = []
    if config.state.backend != "memory":
        out.append("state.backend: 'redis' is not used yet; state is per process")
    if config.prompt_log is not None:
        out.append("prompt_log: the SQLite prompt log is not written yet")
    for name, project in config.projects.items():
        if project.rate_limits is not None:
            out.append(f"projects.{name}.rate_limits: not enforced yet")
        if project.budgets:
            out.append(f"projects.{name}.budgets: not enforced yet")
        if project.prompt_log is not None:
            out.append(f"projects.{name}.prompt_log: the SQLite prompt log is not written yet")
    for i, key in enumerate(config.keys):
        if key.rate_limits is not None:
            out.append(f"keys[{i}].rate_limits ({key.id}): not enforced yet")
    return out
