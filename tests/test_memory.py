"""The allocator settings: applied on glibc, left to the environment when it says."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from aigateway.memory import limit_arenas

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_malloc_arena_max_in_the_environment_wins() -> None:
    assert limit_arenas({"MALLOC_ARENA_MAX": "4"}) is False


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_one_arena_is_set_before_threads_start() -> None:
    # in a fresh process: this one has threads (and arenas) already
    code = "from aigateway.memory import limit_arenas; assert limit_arenas({}) is True"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_pages_go_back_after_a_big_load() -> None:
    # megabytes freed mid-heap (a later allocation pins the heap's top): the pages
    # of the hole go back, and the process's RSS falls
    code = """
import gc
from aigateway.memory import limit_arenas, release_free_memory
limit_arenas({})
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
blocks = [bytearray(100_000) for _ in range(400)]  # ~40 MB below the mmap threshold
pin = bytearray(100_000)  # above them: the heap cannot shrink from its top
del blocks
gc.collect()
before = rss()
assert release_free_memory()
assert before - rss() > 20_000_000, (before, rss())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
