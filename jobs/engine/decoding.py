"""Content decoding of response bodies in bounded pieces, so a gzip bomb never inflates at once.

Pure standard library, used by the fetch engine while it streams a body.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

DECODE_PIECE = 64 * 1024
"""Most decoded bytes produced from one input step: memory stays bounded whatever the ratio."""


class Decoder:
    """Content decoding in bounded pieces (httpx's decoders inflate a whole chunk at once).

    gzip and deflate are decoded; identity and encodings we never ask for are
    passed through as they are (httpx sends `Accept-Encoding: gzip, deflate`).
    """

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip().lower() not in ("", "identity")]
        self._zlib: zlib._Decompress | None = None  # type: ignore[name-defined]
        if codings in (["gzip"], ["x-gzip"]):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif codings == ["deflate"]:
            self._zlib = zlib.decompressobj()

    @property
    def active(self) -> bool:
        """False when bodies pass through unchanged (`decode` would yield its input as is)."""
        return self._zlib is not None

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            yield data
            return
        while data:
            piece = self._zlib.decompress(data, DECODE_PIECE)
            data = self._zlib.unconsumed_tail
            if piece:
                yield piece
            if self._zlib.eof:
                return

    def flush(self) -> Iterator[bytes]:
        if self._zlib is not None and not self._zlib.eof:
            if tail := self._zlib.flush():
                yield tail
