"""What the bot says from the map: rendered playlists, the error playlist, the emergency filler.

Rules:
- A playlist's `tts` templates are rendered from the session first; one that cannot render
  (missing variable) makes the turn an EXECUTION_ERROR and the error playlist plays instead.
- The error playlist is the state's, else the map's; if even that cannot render, the emergency
  filler plays.
- Any provider failure (STT, TTS, LLM, classifier, cache) is logged, put in the turn's metrics
  and heard as the emergency filler; the call goes on. No `clear()` first: fillers were cut when
  the failed work ended, and what is still queued is content the caller should hear.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from orchestrator.call_context import CallContext
from orchestrator.contracts import AudioCache, OutboundAudio
from orchestrator.dialogue_map.models import PlaylistItem
from orchestrator.domain.errors import AudioClosed, ProviderError, VoicebridgeError
from orchestrator.domain.models import SessionState
from orchestrator.events import CallEventKind
from orchestrator.playback import PlaylistPlayer, PreparedItem, prepare

log = logging.getLogger(__name__)

Renderer = Callable[[str, SessionState], str]
# Plays a prepared playlist with the current state's fillers (`bot_turns.BotTurns.play`).
PlayPrepared = Callable[[Sequence[PreparedItem]], Awaitable[None]]


async def play_emergency(
    cache: AudioCache,
    outbound: OutboundAudio,
    key: str,
    *,
    call_id: str,
    bound_s: float,
    cache_timeout_s: float,
) -> None:
    """The call cannot go on (a bug, a failed setup): the map's emergency phrase `key` from the
    cache, so the caller never hears the line go dead before the hang-up.

    Written straight to `outbound` (turn-taking may be in any state), after what is queued; the
    cache read is bounded by `cache_timeout_s` (`[call] cache_timeout_s`), the whole by `bound_s`
    (`[call] apologise_timeout_s`). Never raises: a caller already gone is no news; anything
    else (a key missing, the cache down, the bound passed) is logged with the call id.
    """
    try:
        async with asyncio.timeout(bound_s):
            try:
                async with asyncio.timeout(cache_timeout_s):
                    clip = await cache.get(key)
            except TimeoutError as exc:
                raise ProviderError(f"cache get {key!r} timed out", provider="cache") from exc
            if clip is None:
                log.error("call %s: audio %r is not in the cache", call_id, key)
                return
            await outbound.write(clip)
            await outbound.drain()
    except AudioClosed:
        pass  # the caller hung up: nobody is left to hear it
    except Exception as exc:
        log.warning("call %s: cannot play %s before hanging up: %r", call_id, key, exc)


class Responses:
    """One call's map-driven responses (see the module docstring for the rules)."""

    def __init__(
        self, ctx: CallContext, *, render: Renderer, player: PlaylistPlayer, play: PlayPrepared
    ) -> None:
        self._call_id = ctx.call_id
        self._map = ctx.dialogue_map
        self._session = ctx.session
        self._render = render
        self._player = player
        self._play = play
        self._metrics = ctx.metrics
        self._observe = ctx.observe

    async def play_items(self, items: Sequence[PlaylistItem]) -> None:
        """Render map playlist items and play them; a template that cannot render -> error playlist."""
        try:
            prepared = prepare(items, lambda t: self._render(t, self._session))
        except VoicebridgeError as exc:
            log.error("call %s: cannot render playlist: %s", self._call_id, exc)
            self._metrics.set(flow_status="EXECUTION_ERROR", flow_detail=str(exc))
            await self.play_error_playlist()
            return
        await self._play(prepared)

    async def play_error_playlist(self) -> None:
        """The state's error playlist, else the map's; the emergency filler if that cannot render."""
        state = self._map.state(self._session.current_state_id)
        items = state.error_playlist or self._map.settings.error_playlist
        try:
            prepared = prepare(items, lambda t: self._render(t, self._session))
        except VoicebridgeError:
            prepared = [PreparedItem("cache", key=self._map.settings.emergency_filler_key)]
        await self._play(prepared)

    async def provider_failure(self, exc: BaseException, *, stage: str) -> None:
        """Any STT/TTS/LLM failure: the caller hears the emergency filler, the call goes on."""
        log.warning("call %s: %s failure: %s", self._call_id, stage, exc)
        self._metrics.set(error=f"{stage}: {exc}")
        provider = getattr(exc, "provider", "") or stage
        self._observe(
            CallEventKind.PROVIDER_FAILURE,
            stage=stage,
            error=str(exc),
            provider=provider,
            kind=type(exc).__name__,
        )
        outbound = self._player.outbound
        if outbound is None:
            return
        try:
            await self._player.play_clip(self._map.settings.emergency_filler_key, "answer")
            await outbound.drain()
        except ProviderError:
            log.error("call %s: emergency filler unavailable", self._call_id)
