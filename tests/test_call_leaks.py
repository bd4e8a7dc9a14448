"""Calls leave nothing behind in the service: after sequential calls (each a greeting, a line the
caller says, the bot's answer, then the caller hangs up), no per-call object is alive once the
collector has run, and the process-wide containers that hold calls in progress are empty.

The soak (`make soak`) measures the same over minutes (the service's RSS, tasks, fds, object
counts by type); this is its fast, exact check on the structures, run in `make test`.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from bridge.ari.call import AriCall
from bridge.audiosocket.server import AudioSocketConnection
from bridge.gateway import TelephonyGateway
from bridge.playout import Playout
from orchestrator.adapters.stt.yandex_call import RecognizeCall
from orchestrator.dialogue import DialogueLoop
from orchestrator.orchestrator import Orchestrator
from testkit.ari_service import running_service, talk_and_hang_up
from testkit.fake_ari import FakeAri
from testkit.sip import espeak_pcm
from testkit.standins.launch import DEMO_CALLER_LINES

T = 30.0  # bound on any one wait (s)
CALLS = 4
PER_CALL = (
    Orchestrator,
    DialogueLoop,
    TelephonyGateway,
    Playout,
    AudioSocketConnection,
    AriCall,
    RecognizeCall,
)


def _alive() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, PER_CALL))


async def test_sequential_calls_leave_no_call_object_and_no_entry_behind(fake_ari: FakeAri) -> None:
    line = espeak_pcm(DEMO_CALLER_LINES[0])
    async with running_service(fake_ari) as app:
        for _ in range(CALLS):
            await talk_and_hang_up(app, fake_ari, line, timeout_s=T)
        assert [reason for _, reason in app.outcomes] == ["caller_hangup"] * CALLS
        assert app.ari is not None and app.audiosocket is not None
        async with asyncio.timeout(T):
            await app.ari.idle.wait()
        assert _alive() == Counter()
        assert app.calls_active == 0
        assert not app.drain.orchestrators and app.recordings.in_progress == 0 and not app._expected
        assert not app.metrics._live
        assert app.ari.active_calls == 0
        ari, audiosocket = app.ari, app.audiosocket
        assert not ari._calls and not ari._by_em and ari._transfers.tracked == 0
        assert not audiosocket._expected and not audiosocket._protocols
