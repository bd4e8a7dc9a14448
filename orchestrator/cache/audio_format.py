"""The byte layout of cached audio: a small fixed header, then the PCM.

    offset size  field
    0      4     magic b"VBA1"
    4      1     version (1 or 2)
    5      1     format code (1 = "slin16le": signed 16-bit little-endian mono)
    6      4     sample rate, Hz (uint32, little-endian)
    10     4     duration, ms (uint32, little-endian), checked against the PCM length
    14     32    version 2 only: SHA-256 of the text the audio was synthesized from
    14/46  ...   PCM

The header lets a reader reject foreign or truncated values with a clear error instead of
playing noise to a caller. The text hash (version 2, written when the text is known) lets cache
warming tell a phrase whose text changed in the map from one that is up to date. Version 1 is
still read, and still written when no text is given.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from orchestrator.domain.errors import CacheError
from orchestrator.domain.models import AudioChunk

MAGIC = b"VBA1"
VERSION = 1
VERSION_TEXT = 2  # with the text's SHA-256
FORMAT_SLIN16LE = 1
FORMAT_NAMES = {FORMAT_SLIN16LE: "slin16le"}
_HEADER = struct.Struct("<4sBBII")
HEADER_SIZE = _HEADER.size  # 14 (version 1)
DIGEST_SIZE = 32
HEADER_SIZE_TEXT = HEADER_SIZE + DIGEST_SIZE  # 46 (version 2)


class CacheValueError(CacheError):
    """A cached value cannot be decoded (foreign, truncated, unknown version)."""


@dataclass(frozen=True, slots=True)
class CachedAudio:
    """A decoded cache value: the audio, and the SHA-256 of its text when it was stored."""

    audio: AudioChunk
    text_sha256: bytes | None  # None: stored without its text (version 1)


def text_digest(text: str) -> bytes:
    """SHA-256 of `text` (UTF-8), as stored in a version 2 header."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def pack_audio(audio: AudioChunk, *, text: str | None = None) -> bytes:
    """Header + PCM for `audio`; with `text`, a version 2 header carrying its hash."""
    if len(audio.pcm) % 2:
        raise CacheError(f"cannot store audio with an odd number of bytes ({len(audio.pcm)})")
    if not 0 < audio.sample_rate < 2**32:
        raise CacheError(f"cannot store audio with sample rate {audio.sample_rate}")
    duration_ms = len(audio.pcm) * 1000 // (2 * audio.sample_rate)
    version = VERSION if text is None else VERSION_TEXT
    header = _HEADER.pack(MAGIC, version, FORMAT_SLIN16LE, audio.sample_rate, duration_ms)
    if text is not None:
        header += text_digest(text)
    return header + audio.pcm


def unpack_cached(data: bytes, *, key: str = "?") -> CachedAudio:
    """The audio and text hash in `data`; `CacheValueError` naming `key` and the problem."""
    if len(data) < HEADER_SIZE:
        raise CacheValueError(f"cache value {key!r}: {len(data)} bytes, shorter than the header")
    magic, version, fmt, rate, duration_ms = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheValueError(f"cache value {key!r}: bad magic {magic!r} (not voicebridge audio)")
    if version not in (VERSION, VERSION_TEXT):
        raise CacheValueError(f"cache value {key!r}: unsupported version {version}")
    if fmt not in FORMAT_NAMES:
        raise CacheValueError(f"cache value {key!r}: unknown audio format code {fmt}")
    if rate == 0:
        raise CacheValueError(f"cache value {key!r}: sample rate 0")
    digest: bytes | None = None
    start = HEADER_SIZE
    if version == VERSION_TEXT:
        if len(data) < HEADER_SIZE_TEXT:
            raise CacheValueError(f"cache value {key!r}: {len(data)} bytes, shorter than the header")
        digest, start = bytes(data[HEADER_SIZE:HEADER_SIZE_TEXT]), HEADER_SIZE_TEXT
    pcm = data[start:]
    if len(pcm) % 2:
        raise CacheValueError(f"cache value {key!r}: odd PCM length {len(pcm)}")
    if len(pcm) * 1000 // (2 * rate) != duration_ms:
        raise CacheValueError(
            f"cache value {key!r}: header says {duration_ms} ms, PCM holds "
            f"{len(pcm) * 1000 // (2 * rate)} ms (truncated?)"
        )
    return CachedAudio(AudioChunk(bytes(pcm), rate), digest)


def unpack_audio(data: bytes, *, key: str = "?") -> AudioChunk:
    """The audio in `data`; `CacheValueError` naming `key` and the problem when the header is bad."""
    return unpack_cached(data, key=key).audio
