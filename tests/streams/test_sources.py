"""``Source.lines``: the length limit, line numbers and line breaks, on arbitrary bytes."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sources import Line, Source


def expected_lines(data: bytes, max_bytes: int) -> list[Line]:
    """The rule on the whole input at once: a line of ``max_bytes + 2`` bytes or more before its
    break comes back cut to ``max_bytes``; the others lose their trailing ``\\r``s."""
    texts = data.split(b"\n")
    if texts[-1] == b"":
        texts.pop()  # the input ends with a line break (or is empty)
    return [
        Line(n, text[:max_bytes], cut=True)
        if len(text) >= max_bytes + 2
        else Line(n, text.rstrip(b"\r"))
        for n, text in enumerate(texts, 1)
    ]


PIECES = st.sampled_from([b"\n", b"\r\n", b"\r", b"a", b"{}", b"xyz" * 7, b"\n\n", b"\xff"])


@settings(max_examples=300)
@given(st.lists(PIECES, max_size=60), st.integers(1, 30))
def test_lines_follow_the_rule(pieces: list[bytes], max_bytes: int) -> None:
    data = b"".join(pieces)
    with Source("-", stdin=io.BytesIO(data)) as source:
        got = list(source.lines(max_bytes))
    assert got == expected_lines(data, max_bytes)


def test_gzip_files_and_progress(tmp_path: Path) -> None:
    lines = [b'{"n": %d}' % n for n in range(5000)]
    path = tmp_path / "log.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    with Source(str(path)) as source:
        assert [line.data for line in source.lines(100)] == lines
        assert source.position() == path.stat().st_size == source.size
