"""What changed between two configs: the summary a reload logs and returns."""

from __future__ import annotations

from typing import Any

from aigateway.config.model import GatewayConfig

#: sections whose change needs a restart; a reload keeps the running values
STATIC_SECTIONS = ("server", "state", "cache")
_NAMED_SECTIONS = ("providers", "models", "projects", "retry_policies", "pricing")


def config_diff(old: GatewayConfig, new: GatewayConfig) -> dict[str, dict[str, list[str]]]:
    """Per section, the names added, removed and changed (keys by id). Empty parts left out."""
    out: dict[str, dict[str, list[str]]] = {}
    for section in _NAMED_SECTIONS:
        _compare(out, section, _dumped(getattr(old, section)), _dumped(getattr(new, section)))
    _compare(
        out,
        "keys",
        {k.id: k.model_dump() for k in old.keys},
        {k.id: k.model_dump() for k in new.keys},
    )
    for section in ("admin", "prompt_log"):
        before, after = getattr(old, section), getattr(new, section)
        if before != after:
            out[section] = {"changed": [section]}
    return out


def static_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Fields that changed but only take effect after a restart, as YAML paths."""
    changed = []
    for section in STATIC_SECTIONS:
        before = getattr(old, section).model_dump()
        after = getattr(new, section).model_dump()
        changed += [f"{section}.{k}" for k in sorted(before) if before[k] != after[k]]
    # the prompt log's file and durability are static; what it redacts is not
    dynamic = {"redact", "mode"}
    if (old.prompt_log is None) != (new.prompt_log is None):
        changed.append("prompt_log")
    elif old.prompt_log is not None and new.prompt_log is not None:
        before, after = old.prompt_log.model_dump(), new.prompt_log.model_dump()
        changed += [
            f"prompt_log.{k}" for k in sorted(before) if k not in dynamic and before[k] != after[k]
        ]
    return changed


def _dumped(section: dict[str, Any]) -> dict[str, Any]:
    return {name: value.model_dump() for name, value in section.items()}


def _compare(
    out: dict[str, dict[str, list[str]]], section: str, old: dict[str, Any], new: dict[str, Any]
) -> None:
    parts = {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(n for n in set(old) & set(new) if old[n] != new[n]),
    }
    parts = {k: v for k, v in parts.items() if v}
    if parts:
        out[section] = parts
