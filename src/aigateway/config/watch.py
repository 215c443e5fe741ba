"""Watch gateway.yaml and ask for a reload when its content changes.

Watches the file's *directory*, not the file: editors that write a temporary file
and rename it over the original, and Kubernetes ConfigMap updates (a symlink swap
of ``..data``), replace the inode a file watch would be attached to. A change to
the file's name (or to ``..data``) makes us read the file again, and so does a
quiet second; only a different SHA-256 of its content triggers a reload, so
touch-only writes cost nothing and other files in the directory (a log, a prompt
log) are not even read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

#: how long changes are collected before acting: an editor's write-then-rename
#: lands as one reload, and a valid change is live well within two seconds
DEBOUNCE_MS = 150


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file's bytes, or None if it cannot be read right now."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def concerns(path: Path) -> Callable[[Change, str], bool]:
    """Whether a change in the config's directory may have changed the config: one
    to its own name (edited, replaced by a rename) or to a ConfigMap's ``..data``."""
    names = {path.name, "..data"}
    return lambda _change, changed: os.path.basename(changed) in names


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
    # Only the directory itself, not what is below it (a config next to a data or
    # log directory must not cost a watch per subdirectory), and only changes to the
    # file's own name or a ConfigMap's ..data swap are acted on at once: files
    # written next to the config (logs, a prompt log) are not read or hashed (the
    # watcher's own thread still sees them: keep them elsewhere).
    async for _changes in awatch(
        directory,
        stop_event=stop,
        debounce=DEBOUNCE_MS,
        step=50,
        recursive=False,
        watch_filter=concerns(path),
        rust_timeout=1000,
        yield_on_timeout=True,
    ):
        digest = await asyncio.to_thread(file_digest, path)
        if digest is not None and digest != current_digest():
            await reload()
