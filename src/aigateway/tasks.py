"""Background tasks, held and supervised.

Nothing in the gateway calls ``asyncio.create_task`` directly (ruff bans it): a
task nobody holds can be garbage-collected mid-flight, and one that fails
silently leaves a feature dead. ``Tasks`` keeps every task it starts, logs any
failure, restarts supervised loops with a capped backoff, and cancels
everything on ``close()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

#: how long ``close()`` waits for tasks started with ``finish``
FINISH_GRACE_S = 5.0


class Tasks:
    def __init__(self, logger: Any) -> None:
        self._log = logger
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._finishing: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, held until it ends; failures are logged."""
        task = asyncio.create_task(coro, name=name)  # noqa: TID251 - the one place
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def finish(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Like ``spawn``, for work that must not be lost (settling a budget): on
        ``close()`` it gets up to ``FINISH_GRACE_S`` to complete before it is cancelled."""
        task = self.spawn(name, coro)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    def supervise(
        self,
        name: str,
        factory: Callable[[], Awaitable[None]],
        *,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> asyncio.Task[Any]:
        """Run ``factory()`` and run it again if it fails, until it returns or we close."""

        async def loop() -> None:
            backoff = initial_backoff_s
            while True:
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._log.exception(
                        "background task failed; restarting", task=name, retry_in_s=backoff
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)

        return self.spawn(name, loop())

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if exc is not None:
            self._log.error(
                "background task failed", task=task.get_name(), error=type(exc).__name__
            )

    async def close(self) -> None:
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=FINISH_GRACE_S)
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
