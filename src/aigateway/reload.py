"""Reload: validate and compile a new gateway.yaml completely, then swap one reference.

Requests in flight finish on the snapshot they started with; the next request
sees the new one. An invalid file changes nothing: the old config keeps serving
and the error (with its YAML paths) is logged, counted and returned. Changes to
static sections (``server``, ``state``) are reported as needing a restart and
not applied; everything else in the same file is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigateway.config.diff import config_diff, static_changes
from aigateway.config.load import LoadedConfig, load_config
from aigateway.errors import ConfigError
from aigateway.metrics import Metrics
from aigateway.runtime import Runtime, RuntimeHolder


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: bool
    trigger: str
    #: the config serving after this attempt
    sha256: str
    errors: list[str] = field(default_factory=list)
    diff: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    restart_needed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "trigger": self.trigger,
            "config_sha256": self.sha256,
            "errors": self.errors,
            "diff": self.diff,
            "restart_needed": self.restart_needed,
        }


class Reloader:
    def __init__(
        self,
        path: Path,
        holder: RuntimeHolder,
        build: Callable[[LoadedConfig], Runtime],
        *,
        metrics: Metrics,
        logger: Any,
        env: Mapping[str, str],
        prepare: Callable[[LoadedConfig], None] = lambda loaded: None,
    ) -> None:
        self._path = path
        #: slow set-up a config needs (e.g. a tokenizer), run in a thread before build
        self._prepare = prepare
        self._holder = holder
        self._build = build
        self._metrics = metrics
        self._log = logger
        self._env = env
        self._lock = asyncio.Lock()
        self.last: ReloadResult | None = None
        self.last_success_at: float | None = None

    def current_digest(self) -> str:
        return self._holder.current.loaded.sha256

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:  # one reload at a time: no lost or interleaved swaps
            result = await self._reload(trigger)
        self.last = result
        return result

    async def _reload(self, trigger: str) -> ReloadResult:
        current = self._holder.current
        try:
            # Parsing and validating a large file takes milliseconds: not on the loop.
            loaded = await asyncio.to_thread(load_config, self._path, self._env)
        except ConfigError as exc:
            self._metrics.config_reloads.labels("failure").inc()
            self._log.error(
                "config reload rejected; the old config keeps serving",
                trigger=trigger,
                path=str(self._path),
                errors=exc.problems,
                config_sha256=current.loaded.sha256,
            )
            return ReloadResult(False, False, trigger, current.loaded.sha256, exc.problems)
        if loaded.sha256 == current.loaded.sha256:
            self._metrics.config_reloads.labels("unchanged").inc()
            return ReloadResult(True, False, trigger, loaded.sha256)
        restart = static_changes(current.config, loaded.config)
        if restart:
            kept: dict[str, Any] = {
                "server": current.config.server,
                "state": current.config.state,
                "cache": current.config.cache,
            }
            old_log, new_log = current.config.prompt_log, loaded.config.prompt_log
            if old_log is None or new_log is None:
                kept["prompt_log"] = old_log
            else:  # the file and durability stay; redaction and mode follow the file
                kept["prompt_log"] = old_log.model_copy(
                    update={"redact": new_log.redact, "mode": new_log.mode}
                )
            loaded = LoadedConfig(
                loaded.config.model_copy(update=kept), loaded.sha256, loaded.source
            )
        diff = config_diff(current.config, loaded.config)
        await asyncio.to_thread(self._prepare, loaded)
        self._holder.swap(self._build(loaded))
        self._metrics.config_info.remove(current.loaded.sha256)
        self._metrics.config_info.labels(loaded.sha256).set(1)
        self._metrics.config_reloads.labels("success").inc()
        self.last_success_at = time.time()
        self._metrics.config_last_reload_success.set(self.last_success_at)
        self._log.info(
            "config reloaded",
            trigger=trigger,
            config_sha256=loaded.sha256,
            previous_sha256=current.loaded.sha256,
            diff=diff,
            restart_needed=restart,
        )
        if restart:
            self._log.warning(
                "config fields changed that take effect only after a restart",
                fields=restart,
            )
        return ReloadResult(True, True, trigger, loaded.sha256, [], diff, restart)
