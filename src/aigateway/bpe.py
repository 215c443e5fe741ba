"""Token counts by OpenAI's byte-pair encodings (o200k_base, cl100k_base), exact
and small.

The counts are tiktoken's, token for token: the text is split into pieces by
the encoding's regular expression, each piece's UTF-8 bytes are merged pair by
pair, lowest rank first (the leftmost of equal ranks first), and the count is
the number of parts left. What differs is the memory: tiktoken's Rust tables
hold ~40 MiB for o200k (each of its 200,000 tokens three times, in hash maps),
a Python dict of the same ~37 MiB. A ``Vocabulary`` is three flat arrays: the
tokens' bytes end to end, where each begins, and an open-addressing table from
a token's hash to its rank: ~3.5 MiB for o200k, ~1.7 MiB for cl100k (with the
memories of recent pieces, ~9 and ~5 MiB of the process's RSS).

**Splitting.** tiktoken's patterns use Unicode classes (``\\p{L}``, ``\\p{N}``,
``\\p{Lu}``, ...), possessive quantifiers and a look-ahead, which ``re`` cannot
run. Each character is mapped instead (``str.translate``, C speed) to one code
letter per class the patterns tell apart (a newline, a space, other white space,
a number, an apostrophe, a slash, a combining mark, anything else, and the
letters by case and by whether they fold to one of the contraction letters
``s t m d l v r e``), and ``re`` runs the same alternatives written over those
codes. Greedy quantifiers find what tiktoken's possessive ones find here (each
alternative is anchored by classes that do not overlap), ``re`` alternation is
ordered like fancy-regex's, and ``\\s`` is Unicode's White_Space, not
``str.isspace``. Characters are classed by Python's ``unicodedata``; tiktoken's
regex crate may know a newer Unicode, so a character assigned since (rare
scripts, new CJK extensions) counts as punctuation here and its piece may
differ by a token.

**Speed.** Counts of short pieces are remembered (words repeat), so most pieces
cost one dict lookup; a new piece costs a hash probe, and merging when it is
not a token itself (ranks of the pairs and parts it merges are remembered too).
Long pieces (a run of one letter, a base64 blob) are merged with a heap, so a
hostile text costs n log n, not n². Compiled, counting real text costs 1-2x
tiktoken's time; text of words no vocabulary has, ~5x (``benchmarks/tokens.py``).
"""

from __future__ import annotations

import base64
import heapq
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Final

#: the rank of a byte string that is not a token (above any rank; a small int
#: when compiled)
NOT_A_TOKEN: Final = 1 << 30
#: a rank or an offset in the tables: 3 bytes; all ones is an empty slot
_CELL: Final = 3
_EMPTY: Final = (1 << 24) - 1
#: pieces up to this many bytes are merged by scanning; longer ones with a heap
_SCAN_MAX: Final = 64
#: pieces up to this many characters have their counts remembered ...
MEMO_MAX_CHARS: Final = 32
#: ... at most this many of them per vocabulary (then the memory starts again),
#: and as many byte strings' ranks
MEMO_SIZE: Final = 16384
#: byte strings up to this long have their ranks remembered (MEMO_SIZE of them)
_RANKS_MAX_BYTES: Final = 16
#: at most this many characters' classes remembered (a text of all of Unicode
#: must not grow the table without end)
CLASSES_MAX: Final = 65536

# \s in the patterns (Rust regex): Unicode's White_Space property
_WHITE_SPACE: Final[frozenset[int]] = frozenset(
    {*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029}
    | {0x202F, 0x205F, 0x3000}
)
#: letters a contraction's letter folds from, besides the ASCII ones
_FOLDS: Final[dict[str, str]] = {"\u017f": "s"}  # LATIN SMALL LETTER LONG S
_CONTRACTION_LETTERS: Final = "stmdlvre"

# one code character per class
NEWLINE: Final = "A"  # \r \n
SPACE: Final = "B"  # U+0020
BLANK: Final = "C"  # other white space
NUMBER: Final = "D"  # \p{N}
APOSTROPHE: Final = "E"
SLASH: Final = "F"
MARK: Final = "G"  # \p{M}: a letter to o200k's case classes, not to \p{L}
OTHER: Final = "H"  # punctuation, symbols, controls, unassigned
_CASES: Final[tuple[str, ...]] = ("upper", "lower", "both")  # Lu Lt | Ll | Lm Lo
_LETTER_CODES: Final = "IJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _letter(case: str, fold: str) -> str:
    """The code of a letter of ``case`` that folds to ``fold`` ("" for none)."""
    at = _CONTRACTION_LETTERS.index(fold) + 1 if fold else 0
    return _LETTER_CODES[_CASES.index(case) * 9 + at]


def _letters(case: str | None = None, fold: str | None = None) -> str:
    return "".join(
        _letter(c, f)
        for c in _CASES
        for f in ("", *_CONTRACTION_LETTERS)
        if (case is None or c == case) and (fold is None or f == fold)
    )


def _class_of(ch: str) -> str:
    o = ord(ch)
    if o in (10, 13):
        return NEWLINE
    if o == 32:
        return SPACE
    if o in _WHITE_SPACE:
        return BLANK
    if ch == "'":
        return APOSTROPHE
    if ch == "/":
        return SLASH
    category = unicodedata.category(ch)
    kind = category[0]
    if kind == "N":
        return NUMBER
    if kind == "M":
        return MARK
    if kind != "L":
        return OTHER
    case = "upper" if category in ("Lu", "Lt") else "lower" if category == "Ll" else "both"
    folded = _FOLDS.get(ch) or ch.lower()
    return _letter(case, folded if folded in _CONTRACTION_LETTERS and len(folded) == 1 else "")


_L: Final[str] = _letters()
_UPPER: Final[str] = _letters("upper") + _letters("both") + MARK
_LOWER: Final[str] = _letters("lower") + _letters("both") + MARK
_WS: Final[str] = NEWLINE + SPACE + BLANK
_ALL: Final[str] = NEWLINE + SPACE + BLANK + NUMBER + APOSTROPHE + SLASH + MARK + OTHER + _L
_NOT_NL_L_N: Final[str] = "".join(c for c in _ALL if c not in NEWLINE + _L + NUMBER)
_NOT_WS_L_N: Final[str] = "".join(c for c in _ALL if c not in _WS + _L + NUMBER)


def _f(letter: str) -> str:
    return f"[{_letters(fold=letter)}]"


# '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
# |\s++$|\s*[\r\n]|\s+(?!\S)|\s
CL100K: Final[re.Pattern[str]] = re.compile(
    "|".join(
        [
            f"{APOSTROPHE}(?:[{_letters(fold='s')}{_letters(fold='d')}{_letters(fold='m')}"
            f"{_letters(fold='t')}]|{_f('l')}{_f('l')}|{_f('v')}{_f('e')}|{_f('r')}{_f('e')})",
            f"[{_NOT_NL_L_N}]?[{_L}]+",
            f"{NUMBER}{{1,3}}",
            f"{SPACE}?[{_NOT_WS_L_N}]+{NEWLINE}*",
            f"[{_WS}]+\\Z",
            f"[{_WS}]*{NEWLINE}",
            f"[{_WS}]+(?![^{_WS}])",
            f"[{_WS}]",
        ]
    )
)
_O200K_CONTRACTION: Final[str] = (
    f"(?:{APOSTROPHE}(?:{_f('s')}|{_f('t')}|{_f('r')}{_f('e')}|{_f('v')}{_f('e')}"
    f"|{_f('m')}|{_f('l')}{_f('l')}|{_f('d')}))?"
)
# [^\r\n\p{L}\p{N}]?[UPPER]*[LOWER]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
# |[^\r\n\p{L}\p{N}]?[UPPER]+[LOWER]*(?i:...)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*
# |\s*[\r\n]+|\s+(?!\S)|\s+
O200K: Final[re.Pattern[str]] = re.compile(
    "|".join(
        [
            f"[{_NOT_NL_L_N}]?[{_UPPER}]*[{_LOWER}]+{_O200K_CONTRACTION}",
            f"[{_NOT_NL_L_N}]?[{_UPPER}]+[{_LOWER}]*{_O200K_CONTRACTION}",
            f"{NUMBER}{{1,3}}",
            f"{SPACE}?[{_NOT_WS_L_N}]+[{NEWLINE}{SLASH}]*",
            f"[{_WS}]*{NEWLINE}+",
            f"[{_WS}]+(?![^{_WS}])",
            f"[{_WS}]+",
        ]
    )
)


class Classes:
    """Code point → its class's code, filled as characters are first seen."""

    def __init__(self, limit: int = CLASSES_MAX) -> None:
        self.table: dict[int, int] = {}
        self.limit = limit

    def codes(self, text: str) -> str:
        """``text`` with each character replaced by its class's code."""
        table = self.table
        new = [ch for ch in set(text) if ord(ch) not in table]
        if new:
            if len(table) + len(new) > self.limit:
                table.clear()
                new = list(set(text))
                if len(new) > self.limit:  # more kinds of character than it keeps
                    return text.translate({ord(ch): ord(_class_of(ch)) for ch in new})
            for ch in new:
                table[ord(ch)] = ord(_class_of(ch))
        return text.translate(table)


CLASSES: Final[Classes] = Classes()


class Vocabulary:
    """One encoding's tokens, in flat arrays; counts the tokens of a text.

    ``_blob`` holds the tokens' bytes end to end, by rank; ``_starts`` where each
    begins (3 bytes each, little-endian, one more for the end); ``_slots`` an
    open-addressing table (3 bytes a slot, at most half full, linear probing)
    from a token's ``hash()`` to its rank. Bytes, not ``array``: compiled, a byte
    read is a native load and an array's item a Python call.
    """

    def __init__(self, tokens: Iterable[bytes], pattern: re.Pattern[str]) -> None:
        """``tokens``: each token's bytes, in rank order."""
        self._pattern = pattern
        blob = bytearray()
        starts = bytearray()
        for token in tokens:
            starts += len(blob).to_bytes(_CELL, "little")
            blob += token
        starts += len(blob).to_bytes(_CELL, "little")  # OverflowError past 16 MiB
        self._blob = bytes(blob)
        self._starts = bytes(starts)
        self._size = len(starts) // _CELL - 1
        if self._size >= _EMPTY:
            raise ValueError("too many tokens")
        cells = 1 << max(4, (self._size * 2).bit_length())
        self._mask = cells - 1
        empty = _EMPTY.to_bytes(_CELL, "little")
        slots = bytearray(empty * cells)
        for rank in range(self._size):
            at = hash(self.token(rank)) & self._mask
            while slots[at * _CELL : (at + 1) * _CELL] != empty:
                at = (at + 1) & self._mask
            slots[at * _CELL : (at + 1) * _CELL] = rank.to_bytes(_CELL, "little")
        self._slots = bytes(slots)
        #: counts of short pieces, and ranks of byte strings, seen lately: pieces and
        #: pairs repeat, and a dict lookup is cheaper than a probe (interpreted, 1.8x)
        self._memo: dict[str, int] = {}
        self._ranks: dict[bytes, int] = {}

    def __len__(self) -> int:
        return self._size

    def token(self, rank: int) -> bytes:
        starts = self._starts
        at = rank * _CELL
        start = starts[at] | starts[at + 1] << 8 | starts[at + 2] << 16
        end = starts[at + 3] | starts[at + 4] << 8 | starts[at + 5] << 16
        return self._blob[start:end]

    def rank(self, piece: bytes) -> int:
        """The piece's rank, or ``NOT_A_TOKEN`` when it is not a token."""
        if len(piece) > _RANKS_MAX_BYTES:
            return self._find(piece)
        ranks = self._ranks
        found = ranks.get(piece)
        if found is None:
            if len(ranks) >= MEMO_SIZE:
                ranks.clear()
            found = ranks[piece] = self._find(piece)
        return found

    def _find(self, piece: bytes) -> int:
        slots, starts, blob, mask = self._slots, self._starts, self._blob, self._mask
        size = len(piece)
        at = hash(piece) & mask
        while True:
            cell = at * _CELL
            rank = slots[cell] | slots[cell + 1] << 8 | slots[cell + 2] << 16
            if rank == _EMPTY:
                return NOT_A_TOKEN
            cell = rank * _CELL
            start = starts[cell] | starts[cell + 1] << 8 | starts[cell + 2] << 16
            end = starts[cell + 3] | starts[cell + 4] << 8 | starts[cell + 5] << 16
            if end - start == size:
                i = 0
                while i < size and blob[start + i] == piece[i]:
                    i += 1
                if i == size:
                    return rank
            at = (at + 1) & mask

    def count(self, text: str) -> int:
        """Tokens of ``text`` with no special tokens (tiktoken's ``encode_ordinary``)."""
        try:
            return self._count(text)
        except UnicodeEncodeError:
            # lone surrogates (JSON allows them): tiktoken counts them as U+FFFD
            return self._count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def _count(self, text: str) -> int:
        memo = self._memo
        total = 0
        at = 0
        for codes in self._pattern.findall(CLASSES.codes(text)):
            size = len(codes)
            piece = text[at : at + size]
            at += size
            if size > MEMO_MAX_CHARS:
                total += self.piece(piece.encode())
                continue
            found = memo.get(piece)
            if found is None:
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                found = memo[piece] = self.piece(piece.encode())
            total += found
        return total

    def piece(self, piece: bytes) -> int:
        """Tokens of one piece's bytes."""
        if len(piece) == 1 or self.rank(piece) != NOT_A_TOKEN:
            return 1
        if len(piece) <= _SCAN_MAX:
            return self._scan(piece)
        return self._heap(piece)

    def _scan(self, piece: bytes) -> int:
        """tiktoken's merge: the lowest-ranked adjacent pair (leftmost first) is
        joined until none is a token; ``starts[i]`` is where part ``i`` begins
        and ``ranks[i]`` the rank of part ``i`` joined with part ``i + 1``."""
        n = len(piece)
        starts = list(range(n + 1))
        ranks = [self.rank(piece[i : i + 2]) for i in range(n - 1)]
        ranks.append(NOT_A_TOKEN)
        while True:
            best = NOT_A_TOKEN
            at = -1
            for i in range(len(ranks) - 1):
                if ranks[i] < best:
                    best = ranks[i]
                    at = i
            if at < 0:
                return len(starts) - 1
            # part `at` absorbs part `at + 1`
            del starts[at + 1]
            del ranks[at + 1]
            parts = len(starts) - 1
            ranks[at] = (
                self.rank(piece[starts[at] : starts[at + 2]]) if at + 2 <= parts else NOT_A_TOKEN
            )
            if at > 0:
                ranks[at - 1] = self.rank(piece[starts[at - 1] : starts[at + 1]])

    def _heap(self, piece: bytes) -> int:
        """The same merges in n log n: each candidate pair waits in a heap as (rank,
        where it begins, where it ends), stale ones are skipped when they come up."""
        n = len(piece)
        nxt = list(range(1, n + 2))  # the start of the part after the one at i
        prv = list(range(-1, n))
        alive = [True] * (n + 1)
        heap: list[tuple[int, int, int]] = []
        for i in range(n - 1):
            rank = self.rank(piece[i : i + 2])
            if rank != NOT_A_TOKEN:
                heap.append((rank, i, i + 2))
        heapq.heapify(heap)
        parts = n
        while heap:
            _, start, end = heapq.heappop(heap)
            middle = nxt[start]
            if not alive[start] or middle >= n or nxt[middle] != end:
                continue  # one of its parts was joined to another since
            alive[middle] = False
            nxt[start] = end
            prv[end] = start
            parts -= 1
            if end < n:
                after = nxt[end]
                rank = self.rank(piece[start:after])
                if rank != NOT_A_TOKEN:
                    heapq.heappush(heap, (rank, start, after))
            before = prv[start]
            if before >= 0:
                rank = self.rank(piece[before:end])
                if rank != NOT_A_TOKEN:
                    heapq.heappush(heap, (rank, before, end))
        return parts


def parse_tiktoken(data: bytes) -> Iterator[bytes]:
    """The tokens of a ``.tiktoken`` file (lines of base64 token, space, rank), by
    rank; ranks must run 0, 1, 2, ... as they do in OpenAI's files."""
    expected = 0
    at = 0
    end = len(data)
    while at < end:
        line_end = data.find(b"\n", at)
        if line_end < 0:
            line_end = end
        line = data[at:line_end]
        at = line_end + 1
        if not line.strip():
            continue
        token, rank = line.split()
        if int(rank) != expected:
            raise ValueError(f"rank {int(rank)} out of order (expected {expected})")
        expected += 1
        yield base64.b64decode(token)


__all__ = ["CL100K", "CLASSES", "NOT_A_TOKEN", "O200K", "Classes", "Vocabulary", "parse_tiktoken"]
