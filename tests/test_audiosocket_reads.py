"""ServerProtocol.data_received in process: a read that is one whole 8 kHz frame takes a shortcut
to the receiver (`Decoder.lone_frame`); whatever the reads' boundaries, the receiver must get the
same audio, DTMF and hang-up in the same order, and the same buffering before it is attached."""

from __future__ import annotations

import asyncio
import random
import struct
import uuid

import pytest

from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.protocol import HEADER, Kind, encode_audio, encode_dtmf, encode_uuid
from bridge.audiosocket.server import AudioSocketServer, AudioSocketSettings
from bridge.audiosocket.stream import ServerProtocol
from bridge.pacer import Pacer

Event = tuple[object, ...]


class _Transport(asyncio.Transport):
    """Takes writes and closes; reading is never really paused (the cap is set out of reach)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 4000) if name == "peername" else default


class _Receiver:
    """An AudioReceiver that records what it gets, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_audio(self, pcm: bytes, sample_rate: int) -> None:
        self.events.append(("audio", sample_rate, bytes(pcm)))

    def on_dtmf(self, digit: str) -> None:
        self.events.append(("dtmf", digit))

    def on_hangup(self) -> None:
        self.events.append(("hangup",))


def _deliver(
    reads: list[bytes], *, attach_after: int = 1, pending_limit: int = 50
) -> tuple[list[Event], int, int]:
    """Feed `reads` (the first holds the UUID) to a fresh ServerProtocol; attach a receiver after
    `attach_after` reads. The receiver's events, `dropped_before_receiver`, `unknown_skipped`."""

    async def run() -> tuple[list[Event], int, int]:
        settings = AudioSocketSettings(max_inbound_bytes_per_s=10**9, pending_limit=pending_limit)
        server = AudioSocketServer(settings, pacer=Pacer())
        fut = server.expect(_UUID)
        proto = ServerProtocol(server, "192.0.2.1")
        transport = _Transport()
        proto.connection_made(transport)
        receiver = _Receiver()
        conn: AudioSocketConnection | None = None
        for i, data in enumerate(reads):
            if transport.closing:
                break  # as asyncio's transports: close() stops reading at once
            proto.data_received(data)
            if conn is None and fut.done() and i + 1 >= attach_after:
                conn = fut.result()
                conn.set_receiver(receiver)
        if conn is None:
            conn = fut.result()
            conn.set_receiver(receiver)
        return receiver.events, conn.dropped_before_receiver, conn.unknown_skipped

    return asyncio.run(run())


_UUID = uuid.UUID(int=7)
_HELLO = encode_uuid(_UUID)


def _frame(i: int) -> bytes:
    return struct.pack("<160h", *([i % 30000 + 1] * 160))


def _stream(rnd: random.Random, n: int) -> list[bytes]:
    """Messages: mostly whole 8 kHz frames; other lengths, 16 and 48 kHz, DTMF, an unknown kind of
    320 bytes; maybe a hang-up, an ERROR or a malformed message (odd audio, 320-byte DTMF) late."""
    out = [_HELLO]
    for i in range(n):
        r = rnd.random()
        if r < 0.75:
            out.append(encode_audio(_frame(i)))
        elif r < 0.8:
            out.append(encode_audio(_frame(i)[: rnd.randrange(1, 160) * 2]))
        elif r < 0.85:
            out.append(encode_audio(_frame(i) * 2, Kind.SLIN16))
        elif r < 0.88:
            out.append(encode_audio(_frame(i) * 6, Kind.SLIN48))
        elif r < 0.94:
            out.append(encode_dtmf(rnd.choice("0123456789*#ABCD")))
        else:
            out.append(HEADER.pack(0x05, 320) + _frame(i))
    if rnd.random() < 0.6:
        end = rnd.choice(
            [
                b"\x00\x00\x00",
                HEADER.pack(Kind.ERROR, 0),
                HEADER.pack(Kind.SLIN, 319) + bytes(319),
                HEADER.pack(Kind.DTMF, 320) + bytes(320),
            ]
        )
        out.insert(rnd.randrange(len(out) // 2, len(out) + 1), end)
    return out


def _split(rnd: random.Random, wire: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(wire):
        size = rnd.choice([1, 2, 3, 4, 320, 322, 323, 324, 326, 646, 969, 1000])
        out.append(wire[pos : pos + size])
        pos += size
    return out


@pytest.mark.parametrize("seed", range(40))
def test_any_read_boundaries_give_the_receiver_the_same_events(seed: int) -> None:
    rnd = random.Random(seed)
    msgs = _stream(rnd, rnd.randrange(20, 120))
    attach_after = rnd.choice([1, 2, 5, 30])
    aligned = _deliver(msgs, attach_after=attach_after)  # one message per read: the shortcut
    # Two reads: never the shortcut. Attached at the same point of the stream.
    whole = _deliver([b"".join(msgs[:attach_after]), b"".join(msgs[attach_after:])], attach_after=1)
    assert aligned[0] == whole[0]
    assert aligned[1:] == whole[1:]
    # Arbitrary splits, attached after the UUID: the events a receiver attached at once gets.
    at_once = _deliver(msgs)
    assert _deliver(_split(rnd, b"".join(msgs)))[0] == at_once[0]
    assert [e for e in at_once[0] if e[0] == "audio"] == [e for e in aligned[0] if e[0] == "audio"]


def test_a_frame_then_part_of_the_next_header() -> None:
    one, two = encode_audio(_frame(1)), encode_audio(_frame(2))
    events, _, _ = _deliver([_HELLO, one + two[:2], two[2:], one])
    assert events == [("audio", 8000, _frame(1)), ("audio", 8000, _frame(2)), ("audio", 8000, _frame(1))]
    # 323 bytes that start like a whole frame: a shorter frame and two bytes of the next header.
    short = encode_audio(_frame(3)[:318])
    events, _, _ = _deliver([_HELLO, short + one[:2], one[2:]])
    assert events == [("audio", 8000, _frame(3)[:318]), ("audio", 8000, _frame(1))]


def test_a_320_byte_message_of_another_kind_is_not_audio() -> None:
    events, _, unknown = _deliver([_HELLO, HEADER.pack(0x05, 320) + _frame(1), encode_audio(_frame(2))])
    assert events == [("audio", 8000, _frame(2))]
    assert unknown == 1
    events, _, _ = _deliver([_HELLO, encode_audio(_frame(1), Kind.SLIN16)[:3] + _frame(1)])
    assert events == [("audio", 16000, _frame(1))]


def test_dtmf_and_hangup_in_a_frames_read_keep_their_order() -> None:
    reads = [
        _HELLO,
        encode_dtmf("5") + encode_audio(_frame(1)),
        encode_audio(_frame(2)),
        encode_audio(_frame(3)) + encode_dtmf("#") + b"\x00\x00\x00",
        encode_audio(_frame(4)),  # after the hang-up: nothing
    ]
    events, _, _ = _deliver(reads)
    assert events == [
        ("dtmf", "5"),
        ("audio", 8000, _frame(1)),
        ("audio", 8000, _frame(2)),
        ("audio", 8000, _frame(3)),
        ("dtmf", "#"),
        ("hangup",),
    ]


def test_a_whole_frame_over_the_rate_cap_is_dropped() -> None:
    async def run() -> tuple[list[Event], int]:
        settings = AudioSocketSettings(max_inbound_bytes_per_s=len(_HELLO) + 3 * 323)
        server = AudioSocketServer(settings, pacer=Pacer())
        fut = server.expect(_UUID)
        proto = ServerProtocol(server, "192.0.2.1")
        transport = _Transport()
        proto.connection_made(transport)
        proto.data_received(_HELLO)
        receiver = _Receiver()
        fut.result().set_receiver(receiver)
        for i in range(5):
            if not transport.paused:
                proto.data_received(encode_audio(_frame(i)))
        proto.abort()
        return receiver.events, server.inbound_dropped_bytes

    events, dropped = asyncio.run(run())
    assert events == [("audio", 8000, _frame(i)) for i in range(3)] + [("hangup",)]
    assert dropped == 323  # the read that crossed the cap; reading is paused after it


def test_whole_frames_before_the_receiver_are_buffered_up_to_the_limit() -> None:
    reads = [_HELLO] + [encode_audio(_frame(i)) for i in range(12)] + [encode_dtmf("1")]
    events, dropped, _ = _deliver(reads, attach_after=len(reads), pending_limit=5)
    assert dropped == 8  # 13 messages kept in 5 places: the oldest go
    assert events == [("audio", 8000, _frame(i)) for i in range(8, 12)] + [("dtmf", "1")]


class _HangsUpOnKey(_Receiver):
    """Hangs the leg up when a key is pressed (a transfer key, a hang-up key), as a call may."""

    conn: AudioSocketConnection | None = None

    def on_dtmf(self, digit: str) -> None:
        super().on_dtmf(digit)
        assert self.conn is not None
        self.conn.hangup()


def test_a_digit_that_ends_the_leg_stops_the_rest_of_its_read() -> None:
    # The digit's callback ends the leg; the audio after it in the same read must not reach the
    # receiver after its on_hangup (found by review, 2026-12-03: it did).
    async def run() -> list[Event]:
        server = AudioSocketServer(AudioSocketSettings(max_inbound_bytes_per_s=10**9), pacer=Pacer())
        fut = server.expect(_UUID)
        proto = ServerProtocol(server, "192.0.2.1")
        proto.connection_made(_Transport())
        proto.data_received(_HELLO)
        receiver = _HangsUpOnKey()
        receiver.conn = conn = fut.result()
        conn.set_receiver(receiver)
        proto.data_received(encode_audio(_frame(1)) + encode_dtmf("0") + encode_audio(_frame(2)))
        return receiver.events

    assert asyncio.run(run()) == [("audio", 8000, _frame(1)), ("dtmf", "0"), ("hangup",)]
