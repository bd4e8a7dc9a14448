"""The ARI media lock: no call's externalMedia channel is created while another call's is being
torn down (`CallLegs.media_lock`; creating one AudioSocket channel while another was hung up
stalled Asterisk 22.10.1's ARI for ~10 s; bench/README.md section 7 kept the lock). A fake ARI
(testkit.fake_ari) and the real AudioSocket server.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.ari import AriCall
from testkit.fake_ari import FakeAri
from tests.test_ari_teardown_order import T, controller

LINGER_S = 1.0  # how long an externalMedia DELETE waits for a creation to overlap it


class OverlapSeen(FakeAri):
    """Holds each externalMedia channel's DELETE until another externalMedia POST arrives (then
    records the overlap) or LINGER_S has passed."""

    def __init__(self) -> None:
        super().__init__()
        self.deleting = 0
        self.created_during_delete = 0
        self.deletes_seen = asyncio.Event()
        self._posted = asyncio.Event()

    async def _external_media(self, request: web.Request) -> web.Response:
        if self.deleting:
            self.created_during_delete += 1
        self._posted.set()
        return await super()._external_media(request)

    async def _delete_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.match_info["id"])
        if channel is None or not channel.name.startswith("AudioSocket/"):
            return await super()._delete_channel(request)
        self.deleting += 1
        self._posted.clear()
        self.deletes_seen.set()
        try:
            async with asyncio.timeout(LINGER_S):
                await self._posted.wait()
        except TimeoutError:
            pass  # no creation came in the meantime (the lock held it back)
        finally:
            self.deleting -= 1
        return await super()._delete_channel(request)


async def test_no_external_media_is_created_while_another_is_torn_down() -> None:
    fake = OverlapSeen()
    served: list[str] = []

    async def on_call(call: AriCall) -> None:
        served.append(call.channel_id)  # returns at once: the bot hangs up, the teardown starts

    async with controller(fake, on_call) as (ari, _):
        first = await fake.place_call()
        async with asyncio.timeout(T):
            await fake.deletes_seen.wait()  # the first call's externalMedia DELETE is in progress
        second = await fake.place_call()
        await fake.wait_for(lambda: second in served, T)
        async with asyncio.timeout(T):
            await ari.idle.wait()
    assert served == [first, second]
    assert fake.created_during_delete == 0
