"""Run the gateway: listen, handle signals, drain on the way out.

- SIGTERM / SIGINT: ``/readyz`` turns 503 at once, the listener closes, requests
  and streams in flight get ``server.shutdown_grace_s`` to finish, then the app
  cleans up (background tasks, upstream connections) and the process exits 0.
- SIGHUP: reload the config file (as ``POST /admin/reload`` does).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiohttp import web

from aigateway.app import metrics_app
from aigateway.web_common import HOLDER, METRICS, READY, RELOADER, TASKS


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace_s: float,
    keepalive_timeout_s: float,
    logger: Any,
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=grace_s,
        access_log=None,
        keepalive_timeout=keepalive_timeout_s,
        # a caller that hangs up cancels its handler: the upstream call stops at
        # once (no tokens generated for nobody) and the request is billed as cut
        handler_cancellation=True,
    )
    await runner.setup()
    side: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        metrics_port = app[HOLDER].current.config.server.metrics_port
        if metrics_port is not None:
            side = web.AppRunner(metrics_app(app), handle_signals=False, access_log=None)
            await side.setup()
            await web.TCPSite(side, host, metrics_port).start()
            logger.info("metrics listening", host=host, port=metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloader = app.get(RELOADER)
        if reloader is not None:
            loop.add_signal_handler(
                signal.SIGHUP,
                lambda: app[TASKS].spawn("reload:sighup", reloader.reload("sighup")),
            )
        logger.info("listening", host=host, port=port)
        await stop.wait()
        app[READY]["ready"] = False
        logger.info(
            "shutting down: draining requests in flight",
            in_flight=int(app[METRICS].in_flight.value),
            grace_s=grace_s,
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            asyncio.get_running_loop().remove_signal_handler(sig)
        if side is not None:
            await side.cleanup()
        await runner.cleanup()
