"""Sans-I/O AudioSocket codec: bytes in, messages out, and messages to bytes. No sockets here.

Wire format (Asterisk `res_audiosocket.c`): `[kind: uint8][length: uint16 BIG-endian][payload]`.
Audio payloads are signed 16-bit mono PCM, LITTLE-endian. See docs/protocols.md section 1.

Payload rules, one per kind, applied in both directions so that the server and the fake Asterisk
reject the same things:

- HANGUP: empty. UUID: exactly 16 raw bytes. DTMF: one ASCII byte of `0-9 * # A-D`, upper or
  lower case, decoded as upper case: Asterisk writes the DTMF frame's digit as it came
  (`ast_audiosocket_send_frame()` in res/res_audiosocket.c: `buf[3] = (uint8_t)
  f->subclass.integer`), and a SIP INFO digit keeps its case (`get_event()` in
  res/res_pjsip_dtmf_info.c accepts `'a' <= *c && *c <= 'd'` and passes it through).
- audio (SLIN, SLIN12..SLIN192): non-empty and an even number of bytes (whole 16-bit samples).
  Asterisk hangs up on a zero-length audio message, and an odd length would shift every later
  sample by one byte.
- ERROR: empty or a single code byte (bit flags in the legacy spec).
- any other kind: decoded as `Unknown` (kind and length only; the payload is skipped). Every
  message carries its length (`ast_audiosocket_receive_frame_with_hangup()` reads the 3-byte
  header, then exactly `length` bytes), so skipping a well-framed message of a kind we do not know
  is safe, and Asterisk has added kinds before (DTMF in 22.4.0, SLIN12-192 in 22.7.0).
- a known kind with a payload that breaks its rule is a protocol error. The stream has no
  resynchronisation point, so after one malformed message nothing that follows can be trusted:
  the `Decoder` refuses further input.

Error messages never quote a payload (at most a hex prefix of a few bytes): a peer must not be
able to inflate our log lines (a 64 KiB payload once made a 262,314-character line).
"""

from __future__ import annotations

import struct
import uuid as uuid_mod
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "AUDIO_KINDS",
    "HEADER",
    "MAX_PAYLOAD",
    "SAMPLE_RATES",
    "Audio",
    "AudioSocketProtocolError",
    "Decoder",
    "Dtmf",
    "Error",
    "Hangup",
    "Kind",
    "Message",
    "Unknown",
    "Uuid",
    "encode_audio",
    "encode_dtmf",
    "encode_error",
    "encode_hangup",
    "encode_uuid",
]

HEADER = struct.Struct(">BH")  # kind, payload length: big-endian (network order)
MAX_PAYLOAD = 0xFFFF  # the length field is a uint16
_MAX_AUDIO = MAX_PAYLOAD - 1  # largest even length
DTMF_DIGITS = frozenset("0123456789*#ABCD")
_DTMF_IN = {ord(c): c for c in DTMF_DIGITS} | {ord(c.lower()): c for c in "ABCD"}  # byte -> digit


class AudioSocketProtocolError(ValueError):
    """Malformed AudioSocket input or output: the only exception this module raises.

    `messages` holds the messages decoded from the same `feed()` call before the bad one, so a
    caller can still act on them (e.g. deliver the audio, then hang up).
    """

    def __init__(self, message: str, *, messages: tuple[Message, ...] = ()) -> None:
        super().__init__(message)
        self.messages = messages


class Kind(IntEnum):
    """Message kinds (`enum ast_audiosocket_msg_kind`)."""

    HANGUP = 0x00
    """Hang up the AudioSocket leg; no payload. Asterisk itself signals hangup by EOF instead."""
    UUID = 0x01
    """Call identifier, 16 raw bytes; always the first message from Asterisk."""
    DTMF = 0x03
    """One DTMF digit as one ASCII byte (Asterisk -> server only; since 22.4.0)."""
    SLIN = 0x10
    """Audio, s16le mono 8 kHz."""
    SLIN12 = 0x11
    """Audio, s16le mono 12 kHz (since 22.7.0)."""
    SLIN16 = 0x12
    """Audio, s16le mono 16 kHz (since 22.7.0; 0x12, not 0x11 as some docs say)."""
    SLIN24 = 0x13
    """Audio, s16le mono 24 kHz (since 22.7.0)."""
    SLIN32 = 0x14
    """Audio, s16le mono 32 kHz (since 22.7.0)."""
    SLIN44 = 0x15
    """Audio, s16le mono 44.1 kHz (since 22.7.0)."""
    SLIN48 = 0x16
    """Audio, s16le mono 48 kHz (since 22.7.0)."""
    SLIN96 = 0x17
    """Audio, s16le mono 96 kHz (since 22.7.0)."""
    SLIN192 = 0x18
    """Audio, s16le mono 192 kHz (since 22.7.0)."""
    ERROR = 0xFF
    """Error from Asterisk; optional 1-byte code. Asterisk 22 never actually sends it."""


SAMPLE_RATES: dict[Kind, int] = {
    Kind.SLIN: 8000,
    Kind.SLIN12: 12000,
    Kind.SLIN16: 16000,
    Kind.SLIN24: 24000,
    Kind.SLIN32: 32000,
    Kind.SLIN44: 44100,
    Kind.SLIN48: 48000,
    Kind.SLIN96: 96000,
    Kind.SLIN192: 192000,
}
AUDIO_KINDS = frozenset(SAMPLE_RATES)
# Lookup by raw byte, so decoding an unknown kind needs no try/except around Kind(...).
_KINDS: dict[int, Kind] = {int(k): k for k in Kind}


@dataclass(frozen=True, slots=True)
class Hangup:
    """The peer hung up the AudioSocket leg (kind 0x00)."""


@dataclass(frozen=True, slots=True)
class Uuid:
    """The call's UUID (kind 0x01)."""

    uuid: uuid_mod.UUID


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One DTMF digit (kind 0x03)."""

    digit: str


class Audio(NamedTuple):
    """Audio: s16le mono PCM at `SAMPLE_RATES[kind]` (kinds 0x10-0x18).

    A named tuple, not a frozen dataclass like the other messages: one is built per inbound frame,
    and a frozen dataclass's `__init__` (two `object.__setattr__` calls) cost several times more.
    """

    kind: Kind
    pcm: bytes

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz."""
        return SAMPLE_RATES[self.kind]


_new_tuple = tuple.__new__  # builds a named tuple in C: what `Audio._make` calls, minus its checks


@dataclass(frozen=True, slots=True)
class Error:
    """Error report (kind 0xFF); `code` is None when the message had no payload."""

    code: int | None


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-framed message of a kind this codec does not know; its payload was skipped."""

    kind: int
    length: int


Message = Hangup | Uuid | Dtmf | Audio | Error | Unknown
_HANGUP = Hangup()
_SLIN = Kind.SLIN  # a module constant: `Kind.SLIN` is an attribute lookup through the enum class
_SLIN_FRAME_HEADER = HEADER.pack(Kind.SLIN, 320)
_SLIN_FRAME_MESSAGE = HEADER.size + 320  # 323 bytes: one 20 ms frame at 8 kHz


def _hex_prefix(data: bytes, limit: int = 8) -> str:
    """A few bytes in hex and the length: error messages never quote a whole payload."""
    return f"{data[:limit].hex(' ')}{' ...' if len(data) > limit else ''} ({len(data)} bytes)"


def _decode_payload(kind: Kind, payload: bytes, where: int) -> Message:
    """Build the message for one complete frame; `where` is its stream offset, for errors."""
    n = len(payload)
    if kind in AUDIO_KINDS:
        if n == 0 or n % 2:
            raise AudioSocketProtocolError(
                f"{kind.name} audio payload of {n} bytes at stream offset {where}: "
                "must be a non-zero even number of bytes (16-bit samples)"
            )
        return Audio(kind, payload)
    if kind is Kind.UUID:
        if n != 16:
            raise AudioSocketProtocolError(f"UUID payload of {n} bytes at stream offset {where}: must be 16")
        return Uuid(uuid_mod.UUID(bytes=payload))
    if kind is Kind.DTMF:
        digit = _DTMF_IN.get(payload[0]) if n == 1 else None
        if digit is None:
            raise AudioSocketProtocolError(
                f"DTMF payload {_hex_prefix(payload)} at stream offset {where}: "
                "must be one byte of 0-9*#A-D (either case)"
            )
        return Dtmf(digit)
    if kind is Kind.HANGUP:
        if n:
            raise AudioSocketProtocolError(
                f"HANGUP with a {n}-byte payload at stream offset {where}: must be empty"
            )
        return _HANGUP
    # Kind.ERROR
    if n > 1:
        raise AudioSocketProtocolError(f"ERROR payload of {n} bytes at stream offset {where}: must be 0 or 1")
    return Error(payload[0] if n else None)


class Decoder:
    """Incremental decoder: feed any split of the byte stream, get whole messages back.

    After an `AudioSocketProtocolError` the decoder is failed and raises on every later call.
    """

    __slots__ = ("_buf", "_failed", "_offset")

    def __init__(self) -> None:
        self._buf = bytearray()  # an incomplete message carried over between feeds
        self._offset = 0  # stream offset of the first byte of `_buf` (for error messages)
        self._failed: str | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Decode every complete message in the stream so far; keep the incomplete tail."""
        if self._failed is not None:
            raise AudioSocketProtocolError(f"decoder already failed: {self._failed}")
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data  # fast path: the usual whole 323-byte message costs no copy into _buf
        out: list[Message] = []
        pos, end = 0, len(buf)
        try:
            while end - pos >= 3:
                kind_byte, n = HEADER.unpack_from(buf, pos)
                if end - pos - 3 < n:
                    break
                kind = _KINDS.get(kind_byte)
                if kind is None:  # skipped by its length, never copied
                    out.append(Unknown(kind_byte, n))
                elif kind is _SLIN and n and not n % 2:
                    # The hot path, 50 times a second per call: one slice (bytes from bytes;
                    # from the carry-over bytearray, one copy into bytes) and the message.
                    payload = buf[pos + 3 : pos + 3 + n]
                    pcm = payload if type(payload) is bytes else bytes(payload)
                    out.append(_new_tuple(Audio, (kind, pcm)))  # Audio(kind, pcm) without its Python __new__
                else:
                    out.append(_decode_payload(kind, bytes(buf[pos + 3 : pos + 3 + n]), self._offset + pos))
                pos += 3 + n
        except AudioSocketProtocolError as exc:
            self._failed = str(exc)
            self._buf = bytearray()
            raise AudioSocketProtocolError(str(exc), messages=tuple(out)) from None
        self._offset += pos
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf += buf[pos:]
        return out

    def lone_frame(self, data: bytes) -> bytes | None:
        """The 320-byte payload when `data` is exactly one SLIN message of one 20 ms frame and
        nothing is carried over (the usual read: `feed` would return that one `Audio`, and this
        consumes it as `feed` would, without the list and the message); else None, nothing
        consumed (then `feed` it)."""
        if len(data) != _SLIN_FRAME_MESSAGE or self._buf or self._failed is not None:
            return None
        if not data.startswith(_SLIN_FRAME_HEADER):
            return None
        self._offset += _SLIN_FRAME_MESSAGE
        return data[3:]

    def feed_eof(self) -> None:
        """The stream ended: an error if it ended inside a message."""
        if self._failed is not None:
            raise AudioSocketProtocolError(f"decoder already failed: {self._failed}")
        if self._buf:
            pending = len(self._buf)
            self._failed = f"EOF inside a message ({pending} bytes pending at offset {self._offset})"
            self._buf = bytearray()
            raise AudioSocketProtocolError(
                f"stream ended inside a message: {pending} bytes pending at stream offset {self._offset}"
            )

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)


def encode_audio(pcm: bytes | bytearray | memoryview, kind: Kind = Kind.SLIN) -> bytes:
    """One audio message; `pcm` is s16le mono at the kind's rate, non-empty, even, < 64 KiB."""
    if kind not in AUDIO_KINDS:
        raise AudioSocketProtocolError(f"{kind!r} is not an audio kind")
    n = len(pcm)
    if n == 0 or n % 2 or n > _MAX_AUDIO:
        raise AudioSocketProtocolError(
            f"audio payload of {n} bytes: must be a non-zero even number up to {_MAX_AUDIO}"
        )
    return HEADER.pack(kind, n) + pcm


def encode_hangup() -> bytes:
    """The hangup message (`00 00 00`)."""
    return b"\x00\x00\x00"


def encode_uuid(u: uuid_mod.UUID) -> bytes:
    """The UUID message (16 raw bytes)."""
    return HEADER.pack(Kind.UUID, 16) + u.bytes


def encode_dtmf(digit: str) -> bytes:
    """One DTMF digit message."""
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise AudioSocketProtocolError(f"DTMF digit {digit[:8]!r}: must be one of 0-9*#A-D")
    return HEADER.pack(Kind.DTMF, 1) + digit.encode("ascii")


def encode_error(code: int | None = None) -> bytes:
    """An error message, with an optional one-byte code."""
    if code is None:
        return HEADER.pack(Kind.ERROR, 0)
    if not 0 <= code <= 0xFF:
        raise AudioSocketProtocolError(f"error code {code}: must fit in one byte (0-255)")
    return HEADER.pack(Kind.ERROR, 1) + bytes((code,))
