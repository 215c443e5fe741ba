"""aigateway.bpe against tiktoken itself: the same count for every text, every
alternative of both patterns, long pieces, odd Unicode; and its bounds."""

from __future__ import annotations

import random
import re
import unicodedata

import benchmarks.tokens
import pytest
import tiktoken

from aigateway import bpe
from aigateway.tokens import Tokenizer

NAMES = ["o200k_base", "cl100k_base"]
MODEL = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4-0613"}

#: each alternative of the two patterns, and where they meet
TEXTS = [
    "",
    "hello world",
    "Hello World HELLO wORLD hElLo",
    "don't I'll we've they're she'd it's I'M WE'LL YOU'RE 'S 'sdmt 'llama",
    "\u017f'\u017f it'\u017f DON'T",  # long s folds to s
    "CamelCaseWords and HTTPServer and iPhone and McDonald's",
    "ǅemal ʰa ǈ ǋ",  # titlecase and modifier letters
    "e\u0301te\u0301 \u0301start a\u0308\u0301\u0302 ́ ",  # combining marks anywhere
    "1 12 123 1234 12345 ١٢٣٤ Ⅻ ½ ²³",
    "a/b/c //x\n/ path/to/file.txt http://x.y/z?q=1&r=2",
    "  leading and trailing  ",
    "tabs\tand\vvertical\ffeeds\u00a0nbsp\u2003em\u3000ideographic\u1680ogham",
    "line\nline\r\nline\r\r\n\n\n  \n\t\nend\n",
    "trailing spaces   ",
    "trailing newline spaces \n   ",
    'punct!!! ...??? ;;; (a) [b] {c} <d> "e" #f $g %h &i *j +k =l @m \\n ^o `p |q ~r',
    " !x  !!y\n!z",
    "你好，世界。日本語のテキスト。한국어 텍스트.",  # noqa: RUF001
    "emoji 🚀🚀 👩‍👩‍👧 🇫🇷 ❤️",
    "Ünïcödé façade naïve ŒUVRE straße ẞ İstanbul",
    "code: def f(x):\n    return x**2  # 12345678\n\tif a != b: pass",
    '{"messages": [{"role": "user", "content": "hi"}], "n": 1.5e-3}',
    "\x00\x01\x1c\x1f\x7f\u00ad\u200b\u200d\ufeff",  # controls, format characters
    "The quick brown fox's jumped; don't.\r\n\r\n" * 20,
]
#: pieces long enough to be merged with the heap (and a run of one letter: n log n)
LONG = [
    "a" * 5000,
    "ab" * 3000,
    " " * 4000,
    "\n" * 3000,
    "x\u0301" * 1000,
    "0" * 999,
    "SGVsbG8gd29ybGQhIGhlbGxv" * 200,  # a base64 blob
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 40,
    "ab" * 32 + "c",  # 65 bytes: the first piece past the scan
]


@pytest.fixture(scope="module")
def reference() -> dict[str, tiktoken.Encoding]:
    return {name: benchmarks.tokens.reference(name) for name in NAMES}


@pytest.fixture(scope="module")
def vocabs(tokenizer: Tokenizer) -> dict[str, bpe.Vocabulary]:
    out = {}
    for name in NAMES:
        found = tokenizer._encoding(name)
        assert isinstance(found, bpe.Vocabulary)
        out[name] = found
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", TEXTS + LONG)
def test_counts_are_tiktokens(
    reference: dict[str, tiktoken.Encoding],
    vocabs: dict[str, bpe.Vocabulary],
    name: str,
    text: str,
) -> None:
    assert vocabs[name].count(text) == len(reference[name].encode_ordinary(text))


@pytest.mark.parametrize("name", NAMES)
def test_random_texts_count_as_tiktoken_does(
    reference: dict[str, tiktoken.Encoding], vocabs: dict[str, bpe.Vocabulary], name: str
) -> None:
    # characters from every class the patterns tell apart, and any assigned code point
    rng = random.Random(20261202)
    alphabet = list(
        "aAbBsStTdDmMlLvVrReE'/ \t\n\r\x0b\x0c\xa0\u2003\u3000\u0301\u0308xyZ09٣.,;!?-_(\"#"
        "\u017fß你好🚀ÄéǅʰĞ\u1680\u200b\x00\x1c\u00ad"
    )
    mismatches = []
    for _ in range(3000):
        chars = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.2:
                ch = chr(rng.randrange(0x20, 0x30000))
                if unicodedata.category(ch) in ("Cn", "Cs"):
                    ch = "?"  # unassigned to Python: see the module's note on Unicode
            else:
                ch = rng.choice(alphabet)
            chars.append(ch)
        text = "".join(chars)
        if vocabs[name].count(text) != len(reference[name].encode_ordinary(text)):
            mismatches.append(text)
    assert mismatches == []


@pytest.mark.parametrize("name", NAMES)
def test_a_piece_merges_alike_by_scan_and_by_heap(
    vocabs: dict[str, bpe.Vocabulary], name: str
) -> None:
    vocab = vocabs[name]
    rng = random.Random(7)
    pieces = [t.encode() for t in TEXTS if t] + [bytes(rng.randrange(256) for _ in range(40))]
    pieces += [rng.choice(TEXTS[1:])[:n].encode() for n in range(2, 60)]
    for piece in pieces:
        assert vocab._scan(piece) == vocab._heap(piece), piece


@pytest.mark.parametrize("name", NAMES)
def test_lone_surrogates_count_as_replacement_characters(
    reference: dict[str, tiktoken.Encoding], vocabs: dict[str, bpe.Vocabulary], name: str
) -> None:
    text = "abc\ud800def\udfff \udbff\udc00"  # JSON allows these
    assert vocabs[name].count(text) == len(reference[name].encode_ordinary(text))


@pytest.mark.parametrize("name", NAMES)
def test_the_vocabularies_are_openais(
    reference: dict[str, tiktoken.Encoding], vocabs: dict[str, bpe.Vocabulary], name: str
) -> None:
    vocab, ref = vocabs[name], reference[name]
    assert len(vocab) == {"o200k_base": 199998, "cl100k_base": 100256}[name]
    for token in (b"hello", b" world", b"!", b"\x00", b"\xff", b" the", b"ing"):
        assert vocab.rank(token) == ref.encode_single_token(token)
    assert vocab.rank(b"not a token at all") == bpe.NOT_A_TOKEN
    assert vocab.rank(b"") == bpe.NOT_A_TOKEN
    assert all(vocab.rank(bytes([b])) != bpe.NOT_A_TOKEN for b in range(256))
    # every token is found at its own rank (a slot holding rank 0x00FFFF is not empty)
    assert [r for r in range(len(vocab)) if vocab.rank(vocab.token(r)) != r] == []


def test_memories_are_bounded(vocabs: dict[str, bpe.Vocabulary]) -> None:
    vocab = vocabs["o200k_base"]
    for i in range(bpe.MEMO_SIZE + 10):  # every piece a new word
        vocab.count(f" w{i}x")
    assert len(vocab._memo) <= bpe.MEMO_SIZE and len(vocab._ranks) <= bpe.MEMO_SIZE
    vocab.count("z" * (bpe.MEMO_MAX_CHARS + 1))  # too long to remember
    assert "z" * (bpe.MEMO_MAX_CHARS + 1) not in vocab._memo
    vocab.count("q" * 5000)  # merged by the heap: none of its long parts remembered
    assert max(len(k) for k in vocab._ranks) <= 16
    classes = bpe.Classes(limit=100)
    for start in range(0x4E00, 0x4E00 + 1000, 50):  # 50 new characters a text
        text = "".join(chr(c) for c in range(start, start + 50))
        assert classes.codes(text) == bpe.CLASSES.codes(text)
        assert len(classes.table) <= 100
    # a text of more kinds of character than the table keeps (all of Unicode fits
    # in a few MiB of body): classed for this text, not kept
    text = "".join(chr(c) for c in range(0x20, 0x20 + 500))
    assert classes.codes(text) == bpe.Classes().codes(text)
    assert len(classes.table) <= 100


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"YQ== 1\n", "rank 1 out of order (expected 0)"),
        (b"YQ== 0\nYg== 0\n", "rank 0 out of order (expected 1)"),
        (b"YQ==\n", "not enough values to unpack"),
        (b"YQ== x\n", "invalid literal for int"),
    ],
)
def test_a_broken_vocabulary_file_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        list(bpe.parse_tiktoken(data))


def test_a_vocabulary_file_reads_as_its_tokens() -> None:
    assert list(bpe.parse_tiktoken(b"YQ== 0\n\nYmM= 1\r\nIA== 2")) == [b"a", b"bc", b" "]
