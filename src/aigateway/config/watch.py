"""Watch gateway.yaml and ask for a reload when its content changes.

Watches the file's *directory*, not the file: editors that write a temporary file
and rename it over the original, and Kubernetes ConfigMap updates (a symlink swap
of ``..data``), replace the inode a file watch would be attached to. Any change in
the directory makes us read the file again; only a different SHA-256 of its
content triggers a reload, so unrelated files and touch-only writes cost nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import awatch

#: how long changes are collected before acting: an editor's write-then-rename
#: lands as one reload, and a valid change is live well within two seconds
DEBOUNCE_MS = 150


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file's bytes, or None if it cannot be read right now."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch_config(
    path: Path,
    current_digest: Callable[[], str],
    reload: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
) -> None:
    """Call ``reload()`` whenever the file's content differs from ``current_digest()``.

    Returns when ``stop`` is set. ``current_digest`` is asked each time, so reloads
    triggered elsewhere (SIGHUP, the admin API) are not repeated here.
    """
    # The directory as named, symlinks not followed: a ConfigMap's target directory
    # is replaced on every update. A change elsewhere (the file is a symlink to
    # another place) is still noticed within a second: awatch wakes up at least
    # that often and the content hash is compared every time.
    directory = Path(os.path.abspath(path)).parent  # noqa: ASYNC240 - no I/O: string work
    async for _changes in awatch(
        directory,
        stop_event=stop,
        debounce=DEBOUNCE_MS,
        step=50,
        recursive=True,
        rust_timeout=1000,
        yield_on_timeout=True,
    ):
        digest = await asyncio.to_thread(file_digest, path)
        if digest is not None and digest != current_digest():
            await reload()
