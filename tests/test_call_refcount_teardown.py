"""A finished call is freed by reference counting alone, not left to the cycle collector.

The service makes full collections rare (bridge/gc_policy.py); a call whose objects sat in
reference cycles kept them (the gateway's VAD model, the dialogue, the recognizer's buffer) until
one ran, and could never be frozen (`gc.freeze()`): frozen cycles are never collected. Here the
collector is off for a whole call through the real service (ARI, AudioSocket, stand-in STT, LLM
and TTS over gRPC/HTTP): once it ended, its main objects must be gone already, and a collection
must then find nothing of ours (an object, frame, function or method of bridge/ or orchestrator/,
the AudioSocket leg's transport, a class the ARI client made for a request). What it may find is
the stand-ins' (their gRPC server's method lookup, the espeak-ng subprocess of their synthesis):
test infrastructure, not the call's.
"""

from __future__ import annotations

import asyncio
import gc
import types
import weakref
from collections import Counter
from collections.abc import Iterator

from bridge.app import VoicebridgeApp
from bridge.gc_policy import GcSettings
from orchestrator.adapters.stt.yandex import YandexRecognitionStream
from orchestrator.orchestrator import Orchestrator
from orchestrator.tasks import TaskOwner, cancel_and_wait
from testkit.ari_service import running_service, talk_and_hang_up
from testkit.fake_ari import FakeAri
from testkit.sip import espeak_pcm
from testkit.standins.launch import DEMO_CALLER_LINES
from tests.test_call_leaks import PER_CALL as LEAK_CHECKED

T = 30.0  # bound on any one wait (s)
OURS = ("bridge.", "orchestrator.")
STANDIN = "standin-"  # the prefix of the stand-ins' TaskOwners
ARI_CLIENT = "aioari."  # classes it defines per request through `Repository.__getattr__`
PER_CALL = (*LEAK_CHECKED, YandexRecognitionStream)


def _ours(obj: object, audiosocket_port: int) -> str | None:
    """What names `obj` as ours (bridge/ or orchestrator/, or the AudioSocket leg's transport),
    else None."""
    if isinstance(obj, asyncio.BaseTransport):
        sockname = obj.get_extra_info("sockname")
        leg = isinstance(sockname, tuple) and sockname[1] == audiosocket_port
        return f"AudioSocket transport {type(obj).__name__}" if leg else None
    if isinstance(obj, type) and obj.__module__.startswith(ARI_CLIENT):
        return f"ARI client class {obj.__qualname__}"
    if isinstance(obj, types.FrameType):
        code = obj.f_code
        module = obj.f_globals.get("__name__", "")
        return f"frame {code.co_qualname}" if module.startswith(OURS) else None
    if isinstance(obj, types.MethodType):
        owner = _ours(obj.__self__, audiosocket_port)
        return f"method of {owner}" if owner else None
    if isinstance(obj, types.FunctionType):
        return f"function {obj.__qualname__}" if (obj.__module__ or "").startswith(OURS) else None
    if isinstance(obj, types.CoroutineType):  # no __module__: its code's globals name it
        module = obj.cr_frame.f_globals.get("__name__", "") if obj.cr_frame is not None else ""
        return f"coroutine {obj.__qualname__}" if module.startswith(OURS) else None
    if isinstance(obj, TaskOwner) and obj._prefix.startswith(STANDIN):
        return None  # the stand-in SpeechKit's (test infrastructure) own tasks
    module = type(obj).__module__
    return type(obj).__qualname__ if module.startswith(OURS) else None


def _per_call_tracked() -> Counter[str]:
    """Per-call objects the collector tracks (with it off: alive, or garbage not yet collected)."""
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, PER_CALL))


def _collected(audiosocket_port: int) -> Iterator[str]:
    """What a full collection finds of ours (DEBUG_SAVEALL keeps it in gc.garbage to look at)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [name for o in gc.garbage if (name := _ours(o, audiosocket_port)) is not None]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    yield from found


async def _call(app: VoicebridgeApp, fake: FakeAri, line: bytes) -> tuple[weakref.ref[Orchestrator], int]:
    """One call to its end (`talk_and_hang_up`) and the service idle again. Returns a weak
    reference to its Orchestrator and `gc.get_freeze_count()`, both taken while the call was in
    its dialogue."""
    taken: list[tuple[weakref.ref[Orchestrator], int]] = []

    def take() -> None:
        (orchestrator,) = app.drain.orchestrators
        taken.append((weakref.ref(orchestrator), gc.get_freeze_count()))

    await talk_and_hang_up(app, fake, line, timeout_s=T, on_greeting=take)
    assert app.ari is not None
    async with asyncio.timeout(T):
        await app.ari.idle.wait()
    return taken[0]


async def test_a_finished_call_is_freed_by_reference_counting(fake_ari: FakeAri) -> None:
    line = espeak_pcm(DEMO_CALLER_LINES[0])
    async with running_service(fake_ari) as app:
        await _call(app, fake_ari, line)  # the first call of a process builds lazy caches
        gc.collect()
        gc.disable()
        try:
            gone, _ = await _call(app, fake_ari, line)
            assert app.outcomes[-1][1] == "caller_hangup"
            assert app.ari is not None and app.audiosocket is not None
            async with asyncio.timeout(T):
                while app.audiosocket._protocols:  # noqa: ASYNC110 - connection_lost a loop turn after EOF
                    await asyncio.sleep(0.01)
            assert gone() is None, "the Orchestrator outlived its call with the collector off"
            assert _per_call_tracked() == Counter()
            assert Counter(_collected(app.audiosocket.port)) == Counter()
        finally:
            gc.enable()


async def test_a_call_frozen_once_set_up_is_still_freed_by_reference_counting(fake_ari: FakeAri) -> None:
    # [gc] freeze_calls: each call's set-up freezes every live object; frozen objects are never
    # collected, so a call must leave the frozen set by reference counting when it ends.
    line = espeak_pcm(DEMO_CALLER_LINES[0])
    async with running_service(fake_ari, gc_settings=GcSettings(freeze_calls=True)) as app:
        await _call(app, fake_ari, line)
        base = gc.get_freeze_count()
        gone, frozen = await _call(app, fake_ari, line)
        assert frozen > base, "the call's set-up froze nothing"
        assert gone() is None, "the frozen Orchestrator outlived its call"
    gc.unfreeze()  # the service's own start-up freeze and the calls': back to the collector


class _Holder:
    """Holds a task whose coroutine holds it back (a call's session and its handler task)."""

    task: asyncio.Task[None] | None = None


async def _wait_forever(holder: _Holder) -> None:
    await asyncio.Event().wait()


async def test_a_task_cancelled_by_cancel_and_wait_leaves_no_cycle() -> None:
    # A cancelled task keeps its CancelledError, whose traceback holds the coroutine's frame and
    # so `holder`, which holds the task: cancel_and_wait takes the exception out of the task.
    gc.collect()
    gc.disable()
    try:
        holder = _Holder()
        holder.task = asyncio.create_task(_wait_forever(holder))
        await asyncio.sleep(0)
        await cancel_and_wait(holder.task)
        assert holder.task.cancelled()
        gone = weakref.ref(holder)
        del holder
        assert gone() is None
    finally:
        gc.enable()


async def test_keep_alive_holds_an_owner_until_a_task_that_outlived_its_bound_ends() -> None:
    # The Orchestrator's parts call back into it weakly; a task that did not stop within the
    # cancel bound still runs into those parts, so the owner must live until the task ends.
    release = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # its cleanup outlasts the bound

    gc.collect()
    gc.disable()
    try:
        owner, tasks = _Holder(), TaskOwner("call", cancel_bound_s=0.01)
        task = tasks.spawn(stuck(), "stuck")
        await asyncio.sleep(0)
        await tasks.aclose()
        tasks.keep_alive(owner)
        gone = weakref.ref(owner)
        del owner
        assert gone() is not None and not task.done()
        release.set()
        async with asyncio.timeout(T):
            await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callbacks run a loop turn after the task ends
        assert gone() is None
    finally:
        gc.enable()
