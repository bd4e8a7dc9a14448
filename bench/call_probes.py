"""Bench-only probes on the service's call path, for `bench.call_figures`: what each call's
bridge side wrote and decided, and when (loop time).

`Probe` is one call's timeline; `PROBES` holds them by call id (the AudioSocket UUID).
`probe_connection` records every frame a connection writes, as (loop time, clip label; 0 for
silence); `Probes` (a context manager) patches the server protocol (when the UUID was received)
and the gateway (the VAD's onset and end decisions); `TimedSTT` stamps each STT final (T0).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bridge.audiosocket.connection import AudioSocketConnection
from bridge.audiosocket.protocol import Message, Uuid
from bridge.audiosocket.stream import ServerProtocol
from bridge.gateway import TelephonyGateway
from bridge.vad import VadEvent, VadEventKind
from testkit.fakes import label_of
from testkit.voiced_stt import VoicedLineRecognition, VoicedLineSTT

ANSWER_LABEL = 900  # the label of the answer's clips (the bench's TTS)
BARGE_AFTER_FRAMES = 50  # the caller speaks 1 s into the answer (`Probe.answering`)

__all__ = ["ANSWER_LABEL", "BARGE_AFTER_FRAMES", "PROBES", "Probe", "Probes", "TimedSTT", "probe_connection"]


@dataclass
class Probe:
    """One call's timeline on the bridge side."""

    uuid_at: float | None = None
    frames: list[tuple[float, int]] = field(default_factory=list)  # (loop time, label; 0 silence)
    finals: list[float] = field(default_factory=list)  # STT finals (T0s)
    onsets: list[float] = field(default_factory=list)  # VAD SPEECH_ONSET decisions
    speech_ends: list[tuple[float, float]] = field(default_factory=list)  # VAD SPEECH_END (reported, at)
    records: list[dict[str, Any]] = field(default_factory=list)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    answering: asyncio.Event = field(default_factory=asyncio.Event)
    greeted: asyncio.Event = field(default_factory=asyncio.Event)  # the first greeting frame written
    greeting_label: int = -1
    answer_frames: int = 0
    events: list[tuple[float, str, str | None]] = field(default_factory=list)  # (loop time, kind, text)


PROBES: dict[str, Probe] = {}


def probe_connection(conn: AudioSocketConnection, probe: Probe) -> None:
    """Record every frame the connection writes (instance attributes shadow the methods)."""
    send_audio, send_silence = conn.send_audio, conn.send_silence
    loop = asyncio.get_running_loop()
    frames = probe.frames

    def audio(frame: bytearray) -> None:
        send_audio(frame)
        lab = label_of(frame)
        frames.append((loop.time(), lab))
        if lab == probe.greeting_label:
            probe.greeted.set()
        elif lab == ANSWER_LABEL:
            probe.answer_frames += 1
            if probe.answer_frames == BARGE_AFTER_FRAMES:
                probe.answering.set()

    def silence() -> None:
        send_silence()
        frames.append((loop.time(), 0))

    setattr(conn, "send_audio", audio)  # noqa: B010 - a bench-only probe
    setattr(conn, "send_silence", silence)  # noqa: B010


class Probes:
    """Bench-only probes on the server protocol (UUID received) and the gateway (VAD decisions)."""

    def __enter__(self) -> None:
        self._first = ServerProtocol._first_messages
        self._vad = TelephonyGateway._on_vad
        first, vad = self._first, self._vad

        def first_messages(proto: ServerProtocol, msgs: list[Message]) -> None:
            head = msgs[0]
            if type(head) is Uuid and (probe := PROBES.get(str(head.uuid))) is not None:
                probe.uuid_at = asyncio.get_running_loop().time()
            first(proto, msgs)

        def on_vad(gateway: TelephonyGateway, event: VadEvent) -> None:
            if event.kind is VadEventKind.SPEECH_ONSET and (probe := PROBES.get(gateway.uuid)):
                probe.onsets.append(asyncio.get_running_loop().time())
            elif event.kind is VadEventKind.SPEECH_END and (probe := PROBES.get(gateway.uuid)):
                probe.speech_ends.append((asyncio.get_running_loop().time(), event.at))
            vad(gateway, event)

        setattr(ServerProtocol, "_first_messages", first_messages)  # noqa: B010
        setattr(TelephonyGateway, "_on_vad", on_vad)  # noqa: B010

    def __exit__(self, *exc: object) -> None:
        setattr(ServerProtocol, "_first_messages", self._first)  # noqa: B010
        setattr(TelephonyGateway, "_on_vad", self._vad)  # noqa: B010


class TimedRecognition(VoicedLineRecognition):
    """A voiced-line recognition that stamps each final's loop time (s) into `finals` (T0)."""

    def __init__(self, lines: list[str], finals: list[float]) -> None:
        super().__init__(lines)
        self._finals = finals

    def push_audio(self, frame: bytes) -> None:
        before = self._results.qsize()
        super().push_audio(frame)
        if self._results.qsize() > before:
            self._finals.append(asyncio.get_running_loop().time())


class TimedSTT(VoicedLineSTT):
    """Voiced-line STT whose streams stamp their finals' loop times into one shared list."""

    def __init__(self, lines: list[str], finals: list[float]) -> None:
        super().__init__(lines)
        self._finals = finals

    def open_stream(self) -> TimedRecognition:
        return TimedRecognition(self.lines, self._finals)
