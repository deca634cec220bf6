"""Shared by the fuzz tests: the example budget (small by default, `--fuzz-deep` for long runs) and mutators.

Each fuzz test feeds a parser bytes or text it did not make (random, or a valid sample with random edits, cut at
random points) and allows only what the project promises for bad input: a result, None, a drop counter, or a
WiregateError subclass with a message. Anything else (IndexError, UnicodeDecodeError, RecursionError...) fails."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# set by tests/conftest.py from --fuzz-deep (or by hand: WIREGATE_FUZZ_EXAMPLES=20000 pytest tests/fuzz)
EXAMPLES = int(os.environ.get("WIREGATE_FUZZ_EXAMPLES", "40"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


@st.composite
def mutated(draw, seeds: list[bytes], max_edits: int = 6) -> bytes:
    """One of `seeds` with a few random edits: bytes flipped, inserted, deleted, or a slice repeated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, max_edits))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 32))] * draw(st.integers(1, 4))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def mutated_text(draw, seeds: list[str], max_edits: int = 4) -> str:
    """A seed text with a few edits: characters replaced or inserted (any Unicode), lines dropped or repeated."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, max_edits))):
        op = draw(st.sampled_from(["char", "insert", "line_drop", "line_dup", "value"]))
        at = draw(st.integers(0, len(text)))
        if op == "char" and at < len(text):
            text = text[:at] + draw(st.characters()) + text[at + 1:]
        elif op == "insert":
            text = text[:at] + draw(st.text(max_size=6)) + text[at:]
        elif op in ("line_drop", "line_dup"):
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [] if op == "line_drop" else [lines[i], lines[i]]
            text = "\n".join(lines)
        else:  # a value replaced by another TOML/INI-ish value
            eq = text.find("= ", at)
            if eq != -1:
                end = text.find("\n", eq)
                end = len(text) if end == -1 else end
                value = draw(st.sampled_from(['""', "0", "-1", "99999999999999999999", "1.5", "true", "[]",
                                              "[[]]", "{}", '"::"', '"a:b:c"', '"[::1]:0"', '"x" * 3', "nan",
                                              '"0.0.0.0/0"', '"/"', "'\\u0000'"]))
                text = text[:eq + 2] + value + text[end:]
    return text


@st.composite
def cut(draw, data: bytes) -> list[bytes]:
    """`data` split at random points into consecutive pieces (as TCP may deliver it)."""
    points = draw(st.lists(st.integers(0, len(data)), max_size=12))
    edges = sorted({0, len(data), *points})
    return [data[a:b] for a, b in itertools.pairwise(edges)]
