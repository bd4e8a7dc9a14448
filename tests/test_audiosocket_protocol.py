"""AudioSocket codec: byte for byte both ways; whole, byte by byte, and with trailing data."""

from __future__ import annotations

import re
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audiosocket.protocol import (
    SAMPLE_RATES,
    Audio,
    AudioSocketProtocolError,
    Decoder,
    Dtmf,
    Error,
    Hangup,
    Kind,
    Message,
    Unknown,
    Uuid,
    encode_audio,
    encode_dtmf,
    encode_error,
    encode_hangup,
    encode_uuid,
)

U = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")
PCM = struct.pack("<4h", 1, -2, 300, -32768)  # little-endian samples

# (wire bytes, the message they decode to), written out by hand from the wire format.
VECTORS: list[tuple[bytes, Message]] = [
    (b"\x00\x00\x00", Hangup()),
    (b"\x01\x00\x10" + U.bytes, Uuid(U)),
    (b"\x03\x00\x015", Dtmf("5")),
    (b"\x03\x00\x01#", Dtmf("#")),
    (b"\x10\x00\x08" + PCM, Audio(Kind.SLIN, PCM)),
    (b"\x12\x00\x08" + PCM, Audio(Kind.SLIN16, PCM)),
    (b"\x18\x00\x08" + PCM, Audio(Kind.SLIN192, PCM)),
    (b"\xff\x00\x00", Error(None)),
    (b"\xff\x00\x01\x02", Error(2)),
]


def encode(msg: Message) -> bytes:
    match msg:
        case Hangup():
            return encode_hangup()
        case Uuid(u):
            return encode_uuid(u)
        case Dtmf(d):
            return encode_dtmf(d)
        case Audio(kind, pcm):
            return encode_audio(pcm, kind)
        case Error(code):
            return encode_error(code)
    raise AssertionError(msg)


def tr(data: bytes, expected: list[Message]) -> None:
    """h11-style: whole, one byte at a time, and followed by a partial next message."""
    assert Decoder().feed(data) == expected
    dec = Decoder()
    got: list[Message] = []
    for i in range(len(data)):
        got += dec.feed(data[i : i + 1])
    assert got == expected
    assert dec.pending == 0
    dec.feed_eof()
    dec = Decoder()
    assert dec.feed(data + b"\x10\x01") == expected
    assert dec.pending == 2
    assert dec.feed(b"\x40" + bytes(320)) == [Audio(Kind.SLIN, bytes(320))]


@pytest.mark.parametrize(("wire", "msg"), VECTORS, ids=[repr(m)[:30] for _, m in VECTORS])
def test_vectors_both_directions(wire: bytes, msg: Message) -> None:
    assert encode(msg) == wire
    tr(wire, [msg])


def test_a_whole_call_in_any_split() -> None:
    stream = b"".join(w for w, _ in VECTORS[1:]) + VECTORS[0][0]
    tr(stream, [m for _, m in VECTORS[1:]] + [VECTORS[0][1]])


def test_header_length_is_big_endian_and_pcm_untouched() -> None:
    pcm = bytes(range(256)) * 2  # 512 bytes: length 0x0200
    wire = encode_audio(pcm)
    assert wire[:3] == b"\x10\x02\x00"
    assert wire[3:] == pcm
    assert Decoder().feed(wire)[0] == Audio(Kind.SLIN, pcm)


def test_sample_rates_cover_every_audio_kind() -> None:
    assert SAMPLE_RATES[Kind.SLIN] == 8000
    assert SAMPLE_RATES[Kind.SLIN16] == 16000
    assert SAMPLE_RATES[Kind.SLIN44] == 44100
    assert [int(k) for k in SAMPLE_RATES] == list(range(0x10, 0x19))
    assert Audio(Kind.SLIN48, b"\0\0").sample_rate == 48000


BAD_INPUT = [
    (b"\x01\x00\x0f" + bytes(15), "UUID payload of 15 bytes"),
    (b"\x03\x00\x01x", "DTMF payload 78 (1 bytes)"),
    (b"\x03\x00\x01e", "DTMF payload 65 (1 bytes)"),
    (b"\x03\x00\x00", "DTMF payload  (0 bytes)"),
    (b"\x03\x00\x0212", "DTMF payload 31 32 (2 bytes)"),
    (b"\x10\x00\x00", "SLIN audio payload of 0 bytes"),
    (b"\x12\x00\x03abc", "SLIN16 audio payload of 3 bytes"),
    (b"\x00\x00\x01x", "HANGUP with a 1-byte payload"),
    (b"\xff\x00\x02ab", "ERROR payload of 2 bytes"),
]


@pytest.mark.parametrize(("wire", "reason"), BAD_INPUT)
def test_malformed_input_is_rejected_whole_and_bytewise(wire: bytes, reason: str) -> None:
    with pytest.raises(AudioSocketProtocolError, match=re.escape(reason)):
        Decoder().feed(wire)
    dec = Decoder()
    with pytest.raises(AudioSocketProtocolError, match="stream offset"):
        for i in range(len(wire)):
            dec.feed(wire[i : i + 1])
    # A failed decoder stays failed: the stream has no resynchronisation point.
    with pytest.raises(AudioSocketProtocolError, match="already failed"):
        dec.feed(encode_hangup())


def test_lowercase_dtmf_digits_decode_as_upper_case() -> None:
    # Asterisk passes a SIP INFO digit "a"-"d" through in its case (res_pjsip_dtmf_info.c).
    wire = b"".join(b"\x03\x00\x01" + c.encode() for c in "abcdABCD09*#")
    assert Decoder().feed(wire) == [Dtmf(c) for c in "ABCDABCD09*#"]


@pytest.mark.parametrize("kind", [0x02, 0x04, 0x0F, 0x19, 0x20, 0x80, 0xFE])
def test_well_framed_unknown_kinds_are_skipped_by_their_length(kind: int) -> None:
    payload = bytes(range(7))
    wire = encode_uuid(U) + bytes((kind,)) + struct.pack(">H", len(payload)) + payload + encode_audio(PCM)
    tr(wire, [Uuid(U), Unknown(kind, 7), Audio(Kind.SLIN, PCM)])


def test_an_error_never_quotes_a_large_payload() -> None:
    wire = b"\x03\xff\xff" + b"7" * 0xFFFF  # a 64 KiB "DTMF digit"
    with pytest.raises(AudioSocketProtocolError) as info:
        Decoder().feed(wire)
    assert len(str(info.value)) < 200
    assert "37 37 37 37 37 37 37 37 ... (65535 bytes)" in str(info.value)


def test_error_names_the_offset_and_keeps_the_good_messages_before_it() -> None:
    good = encode_uuid(U) + encode_audio(PCM)
    with pytest.raises(AudioSocketProtocolError) as info:
        Decoder().feed(good + b"\x10\x00\x00")
    assert f"offset {len(good)}" in str(info.value)
    assert info.value.messages == (Uuid(U), Audio(Kind.SLIN, PCM))


def test_eof_inside_a_message_is_an_error() -> None:
    dec = Decoder()
    assert dec.feed(encode_audio(PCM)[:5]) == []
    with pytest.raises(AudioSocketProtocolError, match="5 bytes pending"):
        dec.feed_eof()
    Decoder().feed_eof()  # clean EOF between messages is fine


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: encode_audio(b""), "0 bytes"),
        (lambda: encode_audio(b"abc"), "3 bytes"),
        (lambda: encode_audio(bytes(65536)), "65536 bytes"),
        (lambda: encode_audio(PCM, Kind.DTMF), "not an audio kind"),
        (lambda: encode_dtmf("x"), "'x'"),
        (lambda: encode_dtmf("12"), "'12'"),
        (lambda: encode_error(256), "256"),
    ],
)
def test_encoders_refuse_what_asterisk_would_hang_up_on(call: object, reason: str) -> None:
    assert callable(call)
    with pytest.raises(AudioSocketProtocolError, match=reason):
        call()


def test_largest_audio_message() -> None:
    pcm = bytes(65534)
    wire = encode_audio(pcm)
    assert wire[:3] == b"\x10\xff\xfe"
    assert Decoder().feed(wire) == [Audio(Kind.SLIN, pcm)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=64), max_size=20))
def test_any_bytes_parse_or_raise_the_protocol_error(data: bytes, cuts: list[int]) -> None:
    dec = Decoder()
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            for msg in dec.feed(data[pos : pos + size]):
                assert isinstance(msg, Hangup | Uuid | Dtmf | Audio | Error | Unknown)
            pos += size
        dec.feed_eof()
    except AudioSocketProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.builds(Hangup),
            st.builds(Uuid, st.uuids()),
            st.builds(Dtmf, st.sampled_from("0123456789*#ABCD")),
            st.builds(
                Audio,
                st.sampled_from(list(SAMPLE_RATES)),
                st.binary(min_size=1, max_size=700).map(lambda b: b if len(b) % 2 == 0 else b + b"\0"),
            ),
            st.builds(Error, st.none() | st.integers(0, 255)),
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_round_trip_in_any_chunking(msgs: list[Message], chunk: int) -> None:
    wire = b"".join(encode(m) for m in msgs)
    dec = Decoder()
    got: list[Message] = []
    for i in range(0, len(wire), chunk):
        got += dec.feed(wire[i : i + chunk])
    dec.feed_eof()
    assert got == msgs


def test_lone_frame_takes_exactly_what_feed_would() -> None:
    frame = bytes(range(256)) + bytes(64)
    wire = encode_audio(frame)
    fast, slow = Decoder(), Decoder()
    assert fast.lone_frame(wire) == frame
    assert slow.feed(wire) == [Audio(Kind.SLIN, frame)]
    # Consumed the same: a malformed message after it is reported at the same stream offset.
    bad = b"\x03\x00\x02##"
    with pytest.raises(AudioSocketProtocolError) as fast_err:
        fast.feed(bad)
    with pytest.raises(AudioSocketProtocolError) as slow_err:
        slow.feed(bad)
    assert str(fast_err.value) == str(slow_err.value)


@pytest.mark.parametrize(
    "wire",
    [
        encode_audio(bytes(318)),  # another length
        encode_audio(bytes(320), Kind.SLIN16),  # another kind
        encode_audio(bytes(320)) + b"\x00",  # more than one message
        encode_dtmf("1") * 80 + b"\x03\x00\x01",  # 323 bytes, not audio
    ],
)
def test_lone_frame_leaves_anything_else_to_feed(wire: bytes) -> None:
    decoder = Decoder()
    assert decoder.lone_frame(wire) is None
    assert decoder.pending == 0


def test_lone_frame_never_skips_a_carried_over_tail() -> None:
    decoder = Decoder()
    whole = encode_audio(bytes(320))
    assert decoder.feed(whole[:100]) == []
    assert decoder.lone_frame(whole) is None  # it would follow the held 100 bytes
    assert decoder.pending == 100
