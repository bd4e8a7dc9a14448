"""The bot's side of one call: its turns, each one cancellable playback task (`BotTurns`).

`BotTurns` is the call's `BotVoice` (`orchestrator.routing`): `bot_turn` runs one bot response
as the `playback` task of the call's `TaskOwner`, which barge-in may cut
(`BargeIn.current_playback_task`, `cut`); a cut turn gets `[call] cancel_bound_s` to unwind.
Provider failures during a turn (and a template that cannot render) end in the map's emergency
filler (`Responses.provider_failure`); a failure nothing handled, in the map's emergency phrase
(`apologise`). It also plays prepared playlists with the current
state's fillers (`play`, spec 4.5: what `Responses` plays through) and answers off-script
words with the LLM (`unscripted`, spec 4.3: `orchestrator.answer`). The Orchestrator
(`orchestrator.orchestrator`) builds it and hands it to the dialogue and the drain's wind-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orchestrator.answer import AnswerPipeline
from orchestrator.barge_in import BargeIn
from orchestrator.call_context import CallContext
from orchestrator.contracts import OutboundAudio
from orchestrator.dialogue_map.expressions import ExpressionError
from orchestrator.dialogue_map.templates import TemplateError
from orchestrator.domain.errors import AudioClosed, ProviderError
from orchestrator.playback import PlaylistPlayer, PreparedItem
from orchestrator.responses import Renderer, Responses, play_emergency
from orchestrator.routing import Reply
from orchestrator.tasks import TaskOwner, cancel_and_wait
from orchestrator.turns import Floor, FloorLost, TurnEvent, TurnTaking
from orchestrator.weak import weakly

__all__ = ["BotTurns"]


class BotTurns:
    """One call's bot turns (see the module's docstring); `responses`: the map's playlists
    rendered and played through `play`."""

    def __init__(
        self,
        ctx: CallContext,
        *,
        turns: TurnTaking,
        tasks: TaskOwner,
        barge_in: BargeIn,
        player: PlaylistPlayer,
        answers: AnswerPipeline,
        render: Renderer,
    ) -> None:
        self._map, self._session, self._metrics = ctx.dialogue_map, ctx.session, ctx.metrics
        self._call, self._call_id = ctx.call, ctx.call_id
        self._turns, self._tasks, self._barge_in = turns, tasks, barge_in
        self._player, self._answers = player, answers
        # (Weakly: the responses are this object's, a strong callback would be a cycle.)
        self.responses = Responses(ctx, render=render, player=player, play=weakly(self.play))

    async def bot_turn(self, body: Reply, *, interruptible: bool | None = None) -> bool:
        """Run one bot response as the cancellable `current_playback_task`.

        Returns False when barge-in cut it; the cut playback then gets `[call] cancel_bound_s` to
        unwind before the dialogue listens again (past it, it is abandoned to the call's owner).
        Provider failures (and a template that cannot render) end in the emergency filler.
        """
        if interruptible is None:
            interruptible = self._map.is_interruptible(self._session.current_state_id)
        self._turns.handle(TurnEvent.BOT_TURN_START)
        task = self._tasks.spawn(self._guarded(body), "playback")
        barge_in = self._barge_in
        cut = barge_in.cut = asyncio.get_running_loop().create_future()
        if interruptible:
            barge_in.current_playback_task = task
            if self._turns.caller_speaking:
                # The caller started talking before the answer was ready and is still talking:
                # their words must be heard, not talked over.
                barge_in.handle_barge_in()
        try:
            await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            barge_in.current_playback_task = barge_in.cut = None
            barge_in.resume()  # a turn that ended (or was cancelled) while paused leaves no pause
            if not task.done() or cut.done():  # cut, or we are cancelled: bounded unwinding
                await cancel_and_wait(task, timeout=self._call.cancel_bound_s)
        interrupted = self._turns.floor is Floor.INTERRUPTED
        barge_in.turn_over(interrupted=interrupted)
        self._turns.handle(TurnEvent.PLAYBACK_DONE)
        if interrupted:
            self._metrics.set(interrupted=True)
            return False
        try:
            task.result()
        finally:
            del task  # a failure's traceback holds this frame: no cycle through the task
        return True

    async def _guarded(self, body: Reply) -> None:
        try:
            try:
                await body()
            except AudioClosed:
                return  # the caller hung up: nobody is left to hear an apology
            except (ProviderError, TemplateError, ExpressionError) as exc:
                # What a bot turn can expect to fail; a ConfigError or a bug fails the dialogue.
                await self.responses.provider_failure(exc, stage="playback")
        except AudioClosed:
            # The caller hung up during the apology. (Raised, it would end this task failed, and
            # a dialogue cancelled by that hang-up never retrieves it: "Task exception was never
            # retrieved", with the traceback, on every such call.)
            return
        except FloorLost:
            if self._turns.floor is not Floor.INTERRUPTED:
                raise  # audio outside a bot turn: a bug, not a barge-in
            # A writer of the cut turn ran before its cancellation reached it: nothing to do.

    async def play(self, playlist: Sequence[PreparedItem]) -> None:
        """Play a prepared playlist with fillers from the current state (spec 4.5)."""
        assert self._player.outbound is not None, "run() hands the player its outbound stream"
        state = self._map.state(self._session.current_state_id)
        await self._player.play_playlist(playlist, state.fillers)

    async def apologise(self, outbound: OutboundAudio | None) -> None:
        """After a failure nothing in the dialogue handled (a bug, e.g. in a map condition): the
        map's emergency phrase on `outbound` (None: the call never ran: nothing), bounded by
        `[call] apologise_timeout_s` (`responses.play_emergency`). Never raises."""
        if outbound is None:
            return
        await play_emergency(
            self._player.cache,
            outbound,
            self._map.settings.emergency_filler_key,
            call_id=self._call_id,
            bound_s=self._call.apologise_timeout_s,
            cache_timeout_s=self._call.cache_timeout_s,
        )

    async def unscripted(self, text: str) -> None:
        """Off-script answer from the LLM, streamed through TTS (spec 4.3; `orchestrator.answer`)."""
        state = self._map.state(self._session.current_state_id)
        await self._answers.answer(text, self._session, state.fillers)
