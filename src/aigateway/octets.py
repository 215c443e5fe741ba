"""Byte values for membership tests on the stream path.

``LF in data`` is one ``memchr``; ``b"\\n" in data`` first tries to read ``b"\\n"``
as an integer (CPython raises and clears a TypeError inside) and costs about 25
times as much. A stream tests every read this way, and every chunk's text.
"""

from __future__ import annotations

from typing import Final

LF: Final = 0x0A  # b"\n"
CR: Final = 0x0D  # b"\r"
QUOTE: Final = 0x22  # b'"'
BACKSLASH: Final = 0x5C  # b"\\"
SPACE: Final = 0x20  # b" "
TAB: Final = 0x09  # b"\t"
