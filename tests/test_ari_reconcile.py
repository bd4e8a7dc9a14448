"""ARI faults against a fake ARI server on real sockets (testkit.fake_ari) and the real service.

The websocket drops, the caller hangs up in the gap (the events are lost), the websocket comes
back: the call must end (media channel deleted, calls_active back to 0, reason recorded) within a
bound, found by the reconciliation that follows every reconnection. An Asterisk restart (every
channel gone, websocket down for a while) ends calls in progress cleanly and new calls work after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from bridge.app import VoicebridgeApp
from testkit.ari_service import running_service
from testkit.fake_ari import FakeAri
from testkit.fake_asterisk import FakeAsterisk

T = 15.0  # bound on any one wait
END_BOUND_S = 3.0  # a call whose caller is gone ends within this after the websocket is back


async def _until(predicate: Callable[[], bool], timeout: float) -> None:
    """Wait until `predicate()` holds (checked every 10 ms), at most `timeout` s."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - calls_active and connects are counters, no event
            await asyncio.sleep(0.01)


def _call_tasks() -> list[str]:
    names = ("ari-call-", "call-handler-", "ari-setup-", "ari-reconcile")
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(names)]


@dataclass
class Stack:
    app: VoicebridgeApp
    ari: FakeAri

    async def call(self) -> tuple[str, FakeAsterisk]:
        """Place a call and wait until the caller hears the greeting; returns (channel id, leg)."""
        before = set(map(id, self.ari.legs()))
        channel_id = await self.ari.place_call()
        await self.ari.wait_for(lambda: any(id(leg) not in before for leg in self.ari.legs()), T)
        leg = next(leg for leg in self.ari.legs() if id(leg) not in before)
        async with asyncio.timeout(T):
            await leg.wait_until(lambda c: c.voice_count >= 10)  # 200 ms of the greeting
        return channel_id, leg


@pytest.fixture
async def stack(fake_ari: FakeAri) -> AsyncIterator[Stack]:
    async with running_service(fake_ari, reconnect_s=(0.05, 0.2)) as app:
        yield Stack(app, fake_ari)
    assert _call_tasks() == []


async def test_caller_gone_while_the_websocket_was_down_ends_the_call_after_reconnect(
    stack: Stack,
) -> None:
    app, fake = stack.app, stack.ari
    assert app.ari is not None
    channel_id, leg = await stack.call()
    assert app.calls_active == 1

    await fake.drop_websocket(refuse=True)
    await _until(lambda: not app.ari.connected.is_set(), T)  # type: ignore[union-attr]
    await fake.hangup_caller(channel_id)  # its hang-up events are lost
    # Without events nothing tells the bridge: the media leg stays up and the call counted.
    assert leg.connected and app.calls_active == 1

    fake.allow_websocket()
    await _until(lambda: app.ari.connects == 2, T)  # type: ignore[union-attr]
    await _until(lambda: app.calls_active == 0 and app.ari.active_calls == 0, END_BOUND_S)  # type: ignore[union-attr]
    assert fake.ws_connected_at is not None
    ended_s = asyncio.get_running_loop().time() - fake.ws_connected_at  # within the 10 ms poll
    logging.getLogger(__name__).info("call ended %.3f s after the websocket came back", ended_s)
    assert app.ari.reconciled_gone == 1
    assert app.outcomes[-1][1] == "caller_hangup"
    async with asyncio.timeout(T):
        await leg.wait_closed()  # the media channel was deleted: Asterisk closed the stream
    assert fake.channels == {} and fake.bridges == {}
    assert ("GET", "/ari/channels") in [(r.method, r.path) for r in fake.requests]


async def test_live_calls_survive_a_reconnect(stack: Stack) -> None:
    app, fake = stack.app, stack.ari
    assert app.ari is not None
    _, leg = await stack.call()
    seen = len(fake.requests)
    await fake.drop_websocket()
    await _until(lambda: app.ari.connects == 2, T)  # type: ignore[union-attr]
    # Reconciliation lists the channels after the reconnect and finds the caller still there.
    await _until(lambda: ("GET", "/ari/channels") in [(r.method, r.path) for r in fake.requests[seen:]], T)
    assert app.calls_active == 1 and leg.connected and app.ari.reconciled_gone == 0
    frames = leg.audio_count
    async with asyncio.timeout(T):
        await leg.wait_until(lambda c: c.audio_count >= frames + 10)  # audio still flows


async def test_asterisk_restart_ends_calls_cleanly_and_new_calls_work(stack: Stack) -> None:
    app, fake = stack.app, stack.ari
    assert app.ari is not None
    _, leg1 = await stack.call()
    _, leg2 = await stack.call()
    assert app.calls_active == 2

    await fake.restart()  # every channel gone, AudioSocket streams closed, websocket refused
    await _until(lambda: app.calls_active == 0, T)
    assert not leg1.connected and not leg2.connected
    assert [r for _, r in list(app.outcomes)[-2:]] == ["caller_hangup", "caller_hangup"]

    fake.allow_websocket()  # Asterisk is back
    back = time.monotonic()
    await _until(lambda: app.ari.active_calls == 0 and app.ari.connects == 2, T)  # type: ignore[union-attr]
    _, leg3 = await stack.call()
    logging.getLogger(__name__).info(
        "first call after the restart heard the greeting %.3f s after ARI was back", time.monotonic() - back
    )
    assert app.calls_active == 1 and leg3.voice_count >= 10
    assert all(r.auth == "basic" for r in fake.requests), "credentials must not go into the URL"
