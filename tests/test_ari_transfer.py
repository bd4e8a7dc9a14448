"""Transfer through ARI (`AriCall.transfer`), against a fake_ari ARI on real sockets (testkit.fake_ari).

The handler stands in for the Orchestrator: it asks for a transfer and returns, as the dialogue
does after "transferred" (or goes on after a failure). What the bridge did is read off the fake_ari:
the originate with its channel variables and SIP headers, the bridge's members, what was deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bridge.ari import AriController, AriSettings
from bridge.ari.call import AriCall
from bridge.audiosocket.server import AudioSocketServer
from orchestrator.dialogue_map.models import Transfer
from orchestrator.domain.models import SessionState, TransferOutcome, TransferRequest
from orchestrator.transfer_step import dial_transfer
from testkit.fake_ari import FakeAri, Operator

T = 10.0

REQUEST = TransferRequest(
    endpoint="PJSIP/operator",
    timeout_s=1.0,
    variables={"VB_INTENT": "operator", "VB_STATE": "start", "VB_TRANSCRIPT": "user: позовите оператора"},
    sip_headers=True,
)


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait until the controller's `predicate()` holds (polled: its counters have no event)."""
    async with asyncio.timeout(T):
        while not predicate():  # noqa: ASYNC110 - counters, no event to wait on
            await asyncio.sleep(0.01)


class Transferring:
    """An AriController whose handler transfers every call and records the outcome."""

    def __init__(self, fake_ari: FakeAri, audiosocket: AudioSocketServer, request: TransferRequest) -> None:
        settings = AriSettings(
            url=fake_ari.url,
            audiosocket_host=f"127.0.0.1:{audiosocket.port}",
            reconnect_min_s=0.05,
            reconnect_max_s=0.2,
            timeout_s=2.0,
        )
        self.request = request
        self.fake = fake_ari
        self.outcomes: list[TransferOutcome] = []
        # Who was in a bridge each time `on_answer` ran (a ringback stops there, before bridging).
        self.answered_members: list[set[str]] = []
        self.done = asyncio.Event()
        self.controller = AriController(settings, audiosocket, self._on_call)
        self.task = asyncio.create_task(self.controller.run(), name="test-ari-controller")

    async def _on_call(self, call: AriCall) -> None:
        def on_answer() -> None:
            self.answered_members.append(set().union(*self.fake.bridges.values()))

        self.outcomes.append(await call.transfer(self.request, on_answer=on_answer))
        self.done.set()

    async def close(self) -> None:
        await self.controller.close()
        await asyncio.wait_for(self.task, T)


async def _call(
    fake_ari: FakeAri, audiosocket: AudioSocketServer, request: TransferRequest = REQUEST
) -> Transferring:
    ctl = Transferring(fake_ari, audiosocket, request)
    async with asyncio.timeout(T):
        await ctl.controller.connected.wait()
    return ctl


async def test_answered_transfer_bridges_caller_and_operator_and_releases_the_bot(
    fake_ari: FakeAri, audiosocket: AudioSocketServer
) -> None:
    fake_ari.operators["PJSIP/operator"] = Operator(answer_after_s=0.1)
    ctl = await _call(fake_ari, audiosocket)
    try:
        caller = await fake_ari.place_call()
        async with asyncio.timeout(T):
            await ctl.done.wait()
        assert ctl.outcomes == ["answered"]
        (orig,) = fake_ari.originated
        assert len(ctl.answered_members) == 1 and orig.channel_id not in ctl.answered_members[0]
        assert orig.endpoint == "PJSIP/operator" and orig.app_args == "transfer" and orig.timeout == 1
        assert orig.caller_id == "79990000001"  # the caller's number, shown on the operator's phone
        assert orig.variables["VB_INTENT"] == "operator"
        assert orig.variables["VB_TRANSCRIPT"] == "user: позовите оператора"
        assert orig.variables["PJSIP_HEADER(add,X-VB-INTENT)"] == "operator"
        # The bot's leg goes; the caller stays, bridged with the operator, not hung up.
        await _until(lambda: ctl.controller.active_calls == 0)
        (members,) = fake_ari.bridges.values()
        assert members == {caller, orig.channel_id}
        assert caller not in fake_ari.deleted and caller in fake_ari.channels
        assert all(ch.name.startswith("AudioSocket/") for ch in fake_ari.deleted.values())
        assert fake_ari.legs() == [] or all(not leg.connected for leg in fake_ari.legs())
        # The operator hangs up: the caller is hung up and the bridge destroyed.
        await fake_ari.hangup_channel(orig.channel_id)
        await fake_ari.wait_for(lambda: not fake_ari.bridges and caller in fake_ari.deleted, T)
        await _until(lambda: ctl.controller.transferred_ended == 1)
    finally:
        await ctl.close()


async def test_caller_hanging_up_after_the_transfer_hangs_up_the_operator(
    fake_ari: FakeAri, audiosocket: AudioSocketServer
) -> None:
    fake_ari.operators["PJSIP/operator"] = Operator(answer_after_s=0.05)
    ctl = await _call(fake_ari, audiosocket)
    try:
        caller = await fake_ari.place_call()
        async with asyncio.timeout(T):
            await ctl.done.wait()
        await _until(lambda: ctl.controller.active_calls == 0)
        await fake_ari.hangup_caller(caller)
        op = fake_ari.originated[0].channel_id
        await fake_ari.wait_for(lambda: op in fake_ari.deleted and not fake_ari.bridges, T)
    finally:
        await ctl.close()


@pytest.mark.parametrize(
    ("operator", "outcome"),
    [(Operator(busy=True), "busy"), (Operator(answer_after_s=None), "no_answer")],
    ids=["busy", "no_answer"],
)
async def test_busy_or_unanswered_operator_leaves_the_caller_with_the_bot(
    fake_ari: FakeAri, audiosocket: AudioSocketServer, operator: Operator, outcome: TransferOutcome
) -> None:
    fake_ari.operators["PJSIP/operator"] = operator
    ctl = await _call(fake_ari, audiosocket)
    try:
        caller = await fake_ari.place_call()
        async with asyncio.timeout(T):
            await ctl.done.wait()
        assert ctl.outcomes == [outcome] and ctl.answered_members == []
        op = fake_ari.originated[0].channel_id
        assert op not in fake_ari.channels  # gone: busy, or hung up by Asterisk after the timeout
        # The handler returned: the call ends the ordinary way (the bot hangs the caller up).
        await fake_ari.wait_for(lambda: caller in fake_ari.deleted and not fake_ari.bridges, T)
    finally:
        await ctl.close()


async def test_unknown_endpoint_fails_without_touching_the_call(
    fake_ari: FakeAri, audiosocket: AudioSocketServer
) -> None:
    ctl = await _call(fake_ari, audiosocket)
    try:
        await fake_ari.place_call()
        async with asyncio.timeout(T):
            await ctl.done.wait()
        assert ctl.outcomes == ["failed"] and fake_ari.originated == []
    finally:
        await ctl.close()


async def test_sip_header_values_are_bounded_in_utf8_bytes_at_the_longest_transcript(
    fake_ari: FakeAri, audiosocket: AudioSocketServer
) -> None:
    transcript = "у" * 999 + "z"  # VB_TRANSCRIPT's 1000-character maximum, ~2 KB of UTF-8
    request = TransferRequest(
        endpoint="PJSIP/operator",
        timeout_s=1.0,
        variables={"VB_INTENT": "operator", "VB_TRANSCRIPT": transcript},
        sip_headers=True,
    )
    fake_ari.operators["PJSIP/operator"] = Operator(answer_after_s=0.05)
    ctl = await _call(fake_ari, audiosocket, request)
    try:
        await fake_ari.place_call()
        async with asyncio.timeout(T):
            await ctl.done.wait()
        (orig,) = fake_ari.originated
        header = orig.variables["PJSIP_HEADER(add,X-VB-TRANSCRIPT)"]
        assert len(header.encode()) <= 400 and header == transcript[-len(header) :]
        assert len(header) == 200 and header.endswith("z")  # 199 two-byte letters + "z": no half letter
        assert orig.variables["VB_TRANSCRIPT"] == transcript  # the channel variable keeps it all
        assert orig.variables["PJSIP_HEADER(add,X-VB-INTENT)"] == "operator"
    finally:
        await ctl.close()


class _Control:
    """The `CallControl` the dialogue sees: `AriCall.transfer`, recording `on_answer` calls."""

    def __init__(self, call: AriCall) -> None:
        self.call, self.answered = call, 0

    async def transfer(self, request: TransferRequest) -> TransferOutcome:
        def on_answer() -> None:
            self.answered += 1

        return await self.call.transfer(request, on_answer=on_answer)


async def test_an_operator_answering_late_is_given_up_by_the_transfer_not_cut_mid_bridging(
    fake_ari: FakeAri, audiosocket: AudioSocketServer
) -> None:
    """Ring 1 s; [call] provider_timeout_s 0.5 s; [ari] timeout_s 2 s. The operator answers at
    1.8 s (a late or lost event) and addChannel stalls 0.5 s. The transfer's own deadline gives
    the answer up (no_answer, ringback never stopped); the dialogue's outer bound never fires."""
    fake_ari.operators["PJSIP/operator"] = Operator(answer_after_s=1.8)
    fake_ari.add_channel_delay_s = 0.5
    spec = Transfer(endpoint="PJSIP/operator", timeout_s=1.0, on_transfer_failed="start")
    session = SessionState(call_id="late", current_state_id="start")
    results: list[tuple[TransferOutcome, int]] = []
    done = asyncio.Event()

    async def on_call(call: AriCall) -> None:
        control = _Control(call)
        results.append((await dial_transfer(control, session, spec, "operator", 0.5), control.answered))
        done.set()

    settings = AriSettings(
        url=fake_ari.url,
        audiosocket_host=f"127.0.0.1:{audiosocket.port}",
        reconnect_min_s=0.05,
        timeout_s=2.0,
    )
    controller = AriController(settings, audiosocket, on_call)
    task = asyncio.create_task(controller.run(), name="test-ari-controller")
    try:
        async with asyncio.timeout(T):
            await controller.connected.wait()
        await fake_ari.place_call()
        async with asyncio.timeout(T):
            await done.wait()
        assert results == [("no_answer", 0)]  # not "failed" after on_answer stopped the ringback
        (orig,) = fake_ari.originated
        await fake_ari.wait_for(lambda: orig.channel_id in fake_ari.deleted, T)  # the operator hung up
    finally:
        await controller.close()
        await asyncio.wait_for(task, T)
