"""Graceful drain of `voicebridge serve` as a deploy sees it: a real process, real signals, calls
through a fake ARI (HTTP + websocket) and fake AudioSocket callers on real sockets.

The SIP side (the congestion hang-up heard as 503) is checked on the real Asterisk in
tests/e2e/test_drain.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from testkit.fake_ari import FakeAri
from testkit.fake_asterisk import FakeAsterisk
from testkit.ports import free_port
from testkit.sip import espeak_pcm
from testkit.standins.launch import DEMO_CALLER_LINES

ROOT = Path(__file__).resolve().parent.parent


class Serve:
    """`voicebridge serve --standins` in a subprocess, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="test-serve-output")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, text: str, timeout: float = 60, *, count: int = 1) -> None:
        """Until `count` lines of the output hold `text`."""
        async with asyncio.timeout(timeout):
            while sum(text in line for line in self.lines) < count:
                assert not self._reader.done(), f"serve exited before {text!r}:\n{self.output}"
                self._changed.clear()
                await self._changed.wait()

    async def exit_code(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            rc = await self.proc.wait()
            await self._reader
        return rc


async def serve(ari: FakeAri, **settings: str) -> Serve:
    port = free_port()
    env = {
        **os.environ,
        "VOICEBRIDGE_ARI__URL": ari.url,
        "VOICEBRIDGE_AUDIOSOCKET__BIND_PORT": str(port),
        "VOICEBRIDGE_ARI__AUDIOSOCKET_HOST": f"127.0.0.1:{port}",
        "VOICEBRIDGE_ADMIN__PORT": "0",  # never the default 9180 another service may hold
        **{f"VOICEBRIDGE_{k.upper()}": v for k, v in settings.items()},
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "serve", "--standins",
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    s = Serve(proc)
    await s.wait_for("ARI connected")
    return s


async def stop(s: Serve) -> None:
    if s.proc.returncode is None:
        s.proc.kill()
        await s.proc.wait()


async def answered_call(ari: FakeAri) -> tuple[str, FakeAsterisk]:
    """Place a call and wait until its greeting is heard: (caller channel id, its AudioSocket leg)."""
    channel_id = await ari.place_call()
    await ari.wait_for(lambda: ari.leg_of(channel_id) is not None, 20)
    caller = ari.leg_of(channel_id)
    assert caller is not None
    async with asyncio.timeout(20):
        await caller.wait_until(lambda c: c.voice_count > 0)
    return channel_id, caller


async def bot_finished(caller: FakeAsterisk, voice_before: int, quiet_s: float = 0.8) -> None:
    """Wait until the bot spoke again and then stayed quiet for `quiet_s`."""

    def done(c: FakeAsterisk) -> bool:
        last = c.received[-1].at if c.received else 0.0
        return (
            c.voice_count > voice_before and c.last_voice_at is not None and last - c.last_voice_at >= quiet_s
        )

    async with asyncio.timeout(30):
        await caller.wait_until(done)


async def test_sigterm_mid_call_lets_it_finish_refuses_new_calls_and_exits_0(fake_ari: FakeAri) -> None:
    s = await serve(fake_ari)
    try:
        first, caller = await answered_call(fake_ari)
        s.proc.send_signal(signal.SIGTERM)
        await s.wait_for("draining: new calls are refused")

        # A new call during the drain: hung up unanswered with congestion (PJSIP: 503).
        second = await fake_ari.place_call()
        await fake_ari.wait_for(lambda: second in fake_ari.deleted, 10)
        assert fake_ari.deleted[second].hangup_reason == "congestion"
        assert not fake_ari.deleted[second].answered
        assert fake_ari.leg_of(second) is None and len(fake_ari.legs()) == 1  # no media leg for it

        # The first call goes on to its END_CALL: the caller answers each bot turn.
        heard = 0
        for line in DEMO_CALLER_LINES:
            await bot_finished(caller, heard)
            heard = caller.voice_count
            caller.play(espeak_pcm(line))
        await fake_ari.wait_for(lambda: first in fake_ari.deleted, 60)
        assert fake_ari.deleted[first].hangup_reason is None  # an ordinary hang-up after the goodbye
        assert await s.exit_code(30) == 0, s.output
    finally:
        await stop(s)
    out = s.output
    assert "ended: end_call" in out, out
    assert "drain complete: no call left (1 refused meanwhile)" in out, out
    assert "Traceback" not in out, out


async def test_a_call_past_the_drain_timeout_hears_the_goodbye_then_is_hung_up(fake_ari: FakeAri) -> None:
    s = await serve(fake_ari, call__drain_timeout_s="1.0")
    try:
        first, caller = await answered_call(fake_ari)
        s.proc.send_signal(signal.SIGTERM)
        await s.wait_for("draining: new calls are refused")
        voice_at_drain = caller.voice_count  # the greeting is still playing, the caller says nothing
        await fake_ari.wait_for(lambda: first in fake_ari.deleted, 30)
        assert await s.exit_code(30) == 0, s.output
    finally:
        await stop(s)
    out = s.output
    assert "drain timeout in state greeting: goodbye static:drain_goodbye, then hang-up" in out, out
    assert "ended: drain_timeout" in out, out
    # The goodbye was heard: at least its first 2 s of audio came after the drain began.
    assert caller.voice_count - voice_at_drain >= 100
    assert "Traceback" not in out, out


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_ends_at_once_hanging_up_every_call(
    fake_ari: FakeAri, second_signal: signal.Signals
) -> None:
    s = await serve(fake_ari)  # default drain timeout: 60 s
    try:
        first, caller = await answered_call(fake_ari)
        s.proc.send_signal(signal.SIGTERM)
        await s.wait_for("draining: new calls are refused")
        s.proc.send_signal(second_signal)
        assert await s.exit_code(20) == 0, s.output
    finally:
        await stop(s)
    assert first in fake_ari.deleted  # the caller was hung up, not left on a dead line
    async with asyncio.timeout(5):
        await caller.wait_closed()  # and its AudioSocket connection closed
    out = s.output
    assert "ended: shutdown" in out, out
    assert "Traceback" not in out, out
