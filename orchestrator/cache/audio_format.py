"""The byte layout of cached audio: a small fixed header, then the PCM.

    offset size  field
    0      4     magic b"VBA1"
    4      1     version (1)
    5      1     format code (1 = "slin16le": signed 16-bit little-endian mono)
    6      4     sample rate, Hz (uint32, little-endian)
    10     4     duration, ms (uint32, little-endian), checked against the PCM length
    14     ...   PCM

The header lets a reader reject foreign or truncated values with a clear error instead of
playing noise to a caller.
"""

from __future__ import annotations

import struct

from orchestrator.domain.errors import CacheError
from orchestrator.domain.models import AudioChunk

MAGIC = b"VBA1"
VERSION = 1
FORMAT_SLIN16LE = 1
FORMAT_NAMES = {FORMAT_SLIN16LE: "slin16le"}
_HEADER = struct.Struct("<4sBBII")
HEADER_SIZE = _HEADER.size  # 14


def pack_audio(audio: AudioChunk) -> bytes:
    """Header + PCM for `audio`."""
    if len(audio.pcm) % 2:
        raise CacheError(f"cannot store audio with an odd number of bytes ({len(audio.pcm)})")
    if not 0 < audio.sample_rate < 2**32:
        raise CacheError(f"cannot store audio with sample rate {audio.sample_rate}")
    duration_ms = len(audio.pcm) * 1000 // (2 * audio.sample_rate)
    header = _HEADER.pack(MAGIC, VERSION, FORMAT_SLIN16LE, audio.sample_rate, duration_ms)
    return header + audio.pcm


def unpack_audio(data: bytes, *, key: str = "?") -> AudioChunk:
    """The audio in `data`; `CacheError` naming `key` and the problem when the header is bad."""
    if len(data) < HEADER_SIZE:
        raise CacheError(f"cache value {key!r}: {len(data)} bytes, shorter than the header")
    magic, version, fmt, rate, duration_ms = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CacheError(f"cache value {key!r}: bad magic {magic!r} (not voicebridge audio)")
    if version != VERSION:
        raise CacheError(f"cache value {key!r}: unsupported version {version}")
    if fmt not in FORMAT_NAMES:
        raise CacheError(f"cache value {key!r}: unknown audio format code {fmt}")
    if rate == 0:
        raise CacheError(f"cache value {key!r}: sample rate 0")
    pcm = data[HEADER_SIZE:]
    if len(pcm) % 2:
        raise CacheError(f"cache value {key!r}: odd PCM length {len(pcm)}")
    if len(pcm) * 1000 // (2 * rate) != duration_ms:
        raise CacheError(
            f"cache value {key!r}: header says {duration_ms} ms, PCM holds "
            f"{len(pcm) * 1000 // (2 * rate)} ms (truncated?)"
        )
    return AudioChunk(bytes(pcm), rate)
