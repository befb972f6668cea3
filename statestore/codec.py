"""Encoding of every stored value: msgpack of plain values, compressed when large, framed.

Frame layout (big-endian)::

    b"OL" | version: u8 | flags: u8 | crc32: u32 | body

``body`` is msgpack, zstd-compressed when ``flags & COMPRESSED``. The CRC covers the body as
stored, so a flipped bit anywhere is caught before decompression or unpacking. msgpack's only
extension type in use is its standard timestamp (for timezone-aware datetimes); there is no
pickle and no custom ext code, so stored data is readable from any language.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib
from typing import Any

import msgpack
import zstandard

from statestore.errors import CorruptStateError

MAGIC = b"OL"
FORMAT_VERSION = 1
COMPRESSED = 0x01
CODEC_NAME = "outlast-frame/1"
COMPRESS_THRESHOLD = 1024

_HEADER = struct.Struct(">2sBBI")


class _Zstd(threading.local):
    """One zstd compressor and decompressor per thread.

    ``zstandard`` objects are not thread-safe: sharing one across the threads of a ``ctx.map`` or
    a worker's legs segfaults, fails with ``ZstdError``, or (worst) returns another value's bytes,
    which no checksum over the *compressed* body can catch. Contexts are cheap to keep per thread.
    """

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


class Location:
    """Where bytes came from, for error messages: run, seq, tier, key."""

    __slots__ = ("key", "run_id", "seq", "tier")

    def __init__(
        self,
        *,
        run_id: str | None = None,
        seq: int | None = None,
        tier: str | None = None,
        key: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.seq = seq
        self.tier = tier
        self.key = key

    def describe(self) -> str:
        parts = (("run", self.run_id), ("seq", self.seq), ("tier", self.tier), ("key", self.key))
        return ", ".join(f"{label}={value}" for label, value in parts if value is not None)

    def corrupt(self, reason: str) -> CorruptStateError:
        return CorruptStateError(
            reason, run_id=self.run_id, seq=self.seq, tier=self.tier, key=self.key
        )


def pack(value: Any) -> bytes:
    """msgpack ``value``, or raise ``TypeError`` naming what could not be stored."""
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=True)  # type: ignore[no-any-return]
    except (TypeError, OverflowError, ValueError) as exc:
        raise TypeError(
            f"value of type {type(value).__name__} cannot be stored: {exc}; store plain values "
            "(None, bool, int, float, str, bytes, list, dict, timezone-aware datetime) "
            "or a pydantic model"
        ) from exc


def unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, timestamp=3, strict_map_key=False)


def encode(value: Any, *, compress_threshold: int = COMPRESS_THRESHOLD) -> bytes:
    return frame(pack(value), compress_threshold=compress_threshold)


def frame(body: bytes, *, compress_threshold: int = COMPRESS_THRESHOLD) -> bytes:
    flags = 0
    if len(body) > compress_threshold:
        squeezed = _zstd.compressor.compress(body)
        if len(squeezed) < len(body):
            body, flags = squeezed, COMPRESSED
    return _HEADER.pack(MAGIC, FORMAT_VERSION, flags, zlib.crc32(body)) + body


def unframe(data: bytes, where: Location) -> bytes:
    """Check a frame and return its msgpack body, or raise ``CorruptStateError``."""
    if len(data) < _HEADER.size:
        raise where.corrupt(f"frame of {len(data)} bytes is shorter than its header")
    magic, version, flags, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise where.corrupt(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise where.corrupt(f"unknown format version {version}")
    body = data[_HEADER.size :]
    if zlib.crc32(body) != crc:
        raise where.corrupt("checksum mismatch")
    if flags & COMPRESSED:
        try:
            body = _zstd.decompressor.decompress(body)
        except zstandard.ZstdError as exc:
            raise where.corrupt(f"cannot decompress: {exc}") from exc
    return body


def decode(data: bytes, where: Location) -> Any:
    body = unframe(data, where)
    try:
        return unpack(body)
    except (ValueError, msgpack.UnpackException) as exc:
        raise where.corrupt(f"cannot unpack: {exc}") from exc


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: Any) -> str:
    """sha256 of ``value``'s canonical msgpack: every map's entries sorted, recursively.

    Used for identities that must not depend on how a client happened to order a dict (a run's
    input hash: a retried ``POST /runs`` with its keys reordered is the same request). Entries
    are sorted by the canonical bytes of their keys, which orders keys of any mix of types the
    same way every time. Tuples and lists encode alike, as msgpack arrays. Raises ``TypeError``
    like ``pack`` for values that cannot be stored.
    """
    return hashlib.sha256(_canonical(value)).hexdigest()


def _canonical(value: Any) -> bytes:
    if isinstance(value, dict):
        items = sorted((_canonical(k), _canonical(v)) for k, v in value.items())
        # A fresh Packer per call: Packer objects keep a buffer and are not thread-safe.
        head: bytes = msgpack.Packer(use_bin_type=True).pack_map_header(len(items))
        return head + b"".join(k + v for k, v in items)
    if isinstance(value, list | tuple):
        head = msgpack.Packer(use_bin_type=True).pack_array_header(len(value))
        return head + b"".join(_canonical(v) for v in value)
    return pack(value)
