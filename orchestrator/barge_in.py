"""The caller's speech over the bot: pause at onset, resume after a false alarm, cut, backchannels.

Barge-in arrives synchronously from the gateway's VAD (through the Orchestrator's
`VoiceListener` methods), so the bot stops within the current 20 ms frame: the playback task is
cancelled and the outbound buffer cleared at once. It has two stages: at the first tens of ms of
possible speech (`on_speech_onset`) an interruptible turn's audio pauses (the queue kept); then the
call's `InterruptionDecider` (orchestrator/interruption.py) decides within a bounded window, from the
VAD's events and the STT partials: content words cancel the turn, backchannel words ("угу",
"понятно"), the bot's own words (`bot_says`), a run that turns out not to be speech
(`on_speech_rejected`) or a window with no words resume it from the next unsent frame; while the
STT is not known to work (neither words nor an answer from its service yet, or `stt_lost` after
a stall), sustained speech cancels without words. The window's end is one timer handle per overlap (no task).

Speech that began over an uninterrupted bot turn is a backchannel (or echo): its recognition
results are dropped, also those that arrive up to `_LATE_BACKCHANNEL_S` after the turn ended;
except a backchannel word's final ("да") in a state that takes it as the answer
(`orchestrator.backchannel`): that goes to the dialogue, heard once the bot's turn is over.
Except too the words of speech resumed as a false alarm before the STT had answered for it
(`[interruption] late_words_ms`: an STT that lags the audio): results whose audio reaches that
onset, and does not start after its end (`owed_words.AFTER_RUN_TOLERANCE_S`), are judged as
its words (content words cut the bot late; a content final after the turn is heard). Each
result's audio is put on the call's clock by the recognition's true origin (`stt_origin`: the
call-clock time of its audio's 0 ms, `recognition_capabilities.AudioOrigin`, else when it was attached).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchestrator.backchannel import is_answer
from orchestrator.contracts import Clock, OutboundAudio
from orchestrator.domain.models import SttResult
from orchestrator.events import CallEventKind, Observe
from orchestrator.interruption import InterruptionDecider, Verdict
from orchestrator.interruption_settings import InterruptionSettings
from orchestrator.metrics import Mark, MetricsLogger
from orchestrator.overlap_words import PartialKind
from orchestrator.playback import PlaylistPlayer
from orchestrator.turns import Floor, TurnEvent, TurnTaking

__all__ = ["BargeIn"]

# How long after an uninterrupted bot turn the results of speech that began over it are dropped
# as a backchannel (SpeechKit finalises 0.3-0.8 s after the speech ends), s.
_LATE_BACKCHANNEL_S = 1.5


class BargeIn:
    """One call's barge-in state: the bot turn that may be cut, its pause, the backchannel window."""

    def __init__(
        self,
        *,
        turns: TurnTaking,
        player: PlaylistPlayer,
        clock: Clock,
        metrics: MetricsLogger,
        observe: Observe,
        outbound: Callable[[], OutboundAudio | None],
        interruption: InterruptionSettings | None = None,
        answer_words: Callable[[], frozenset[str]] = frozenset,
        stt_answered: Callable[[], float | None] = lambda: None,
        stt_origin: Callable[[], float | None] = lambda: None,
    ) -> None:
        """`outbound`: the call's outbound stream once `run()` set it (None before);
        `interruption`: the pause/cancel decision's settings (`[interruption]`);
        `answer_words`: the backchannel words the current state takes as the caller's answer
        ("да" for a yes/no question; empty: none; `orchestrator.backchannel.answer_words`);
        `stt_answered`: when the STT's service last answered the call's recognition, on `clock`
        (`RecognitionStream.answered_at`; None: not yet);
        `stt_origin`: the call-clock time (s) of the recognised audio's 0 ms, which
        `SttResult.audio_*_ms` count from (`AudioOrigin.audio_origin`; None: unknown, results
        are then taken as untimed)."""
        self._turns = turns
        self._player = player
        self._clock = clock
        self._metrics = metrics
        self._observe = observe
        self._outbound = outbound
        self._answer_words = answer_words
        self._stt_answered = stt_answered
        self._stt_origin = stt_origin
        self.current_playback_task: asyncio.Task[None] | None = None
        self.cut: asyncio.Future[None] | None = None  # resolved by the barge-in on the bot's turn
        self._paused = False  # the outbound is paused at a speech onset (two-stage barge-in)
        self._overlap_open = False  # the caller spoke over the bot's turn, no final heard yet
        self._backchannel_until: float | None = None  # drop that speech's results until then
        self._undecided_at_end = False  # the turn ended while a decision on the caller's speech waited
        self.pauses = 0  # onsets that paused the bot
        self.resumes = 0  # of those, false alarms: the bot went on from where it paused
        self.results_dropped = 0  # recognition results dropped as echo or backchannel
        self._decider = InterruptionDecider(interruption)
        self._timer: asyncio.TimerHandle | None = None  # the decision window's end

    # ------------------------------------------------------------------ recognition results
    def screen(self, event: SttResult) -> bool:
        """Whether `event` is the caller's (True) or echo/backchannel, dropped (False)."""
        now = self._clock.now()
        start, end = self._audio_span(event)
        self._decider.words(event.text, now, audio_end=end)  # words: the STT is known to work
        if not self._turns.hears_caller and self._playing():
            # Words over the bot: content words interrupt it (the result is then the caller's).
            verdict = self._decider.partial(
                event.text, now, final=event.is_final, audio_start=start, audio_end=end
            )
            self._apply(verdict)
        if not self._turns.hears_caller:
            # Heard while the bot spoke and nobody interrupted: echo or a backchannel, or the
            # answer to a yes/no question said over its end (queued: heard when the turn ends).
            if self._answer(event):
                self._overlap_open = False
                return True
            self._overlap_open = not event.is_final  # its final may come after the turn
            self._drop(event)
            return False
        if self._backchannel_until is not None and self._answer(event):
            self._backchannel_until = None
            return True
        return not self._late_backchannel(event, start, end)

    def _audio_span(self, event: SttResult) -> tuple[float | None, float | None]:
        """Where `event`'s audio starts and ends on the clock (s), each None if unknown (no
        timing in the result, or no origin for the recognition's audio)."""
        start_ms, end_ms = event.audio_start_ms, event.audio_end_ms
        if start_ms is None and end_ms is None:
            return None, None
        origin = self._stt_origin()
        if origin is None:
            return None, None
        start = None if start_ms is None else origin + start_ms / 1000
        end = None if end_ms is None else origin + end_ms / 1000
        return start, end

    def _answer(self, event: SttResult) -> bool:
        """Whether `event` is a backchannel final that the current state takes as the answer."""
        return event.is_final and is_answer(event.text, self._answer_words())

    def _drop(self, event: SttResult) -> None:
        self.results_dropped += 1
        self._observe(CallEventKind.STT_DROPPED, text=event.text)

    def _late_backchannel(self, event: SttResult, start: float | None, end: float | None) -> bool:
        """Whether `event` ends speech that began during an uninterrupted bot turn (dropped)."""
        until = self._backchannel_until
        if until is None:
            return False
        if self._clock.now() > until:
            self._backchannel_until = None
            return False
        owed = self._decider.owed_run.kept  # a resumed run's words owed when the turn ended
        if (
            event.is_final
            and (self._undecided_at_end or (owed is not None and owed.covers(start, end)))
            and self._decider.kind(event.text) is PartialKind.CONTENT
        ):
            # Its words would have cut the bot, and the decision on speech the VAD heard was still
            # waiting for them when the turn ended (one word short, or none yet), or they are a
            # resumed run's owed words (their audio is that run's): the caller's, heard.
            # (Otherwise it is what the STT made of the bot's echo.)
            self._backchannel_until = None
            return False
        if event.is_final:
            self._backchannel_until = None
        self._drop(event)
        return True

    def stt_lost(self) -> None:
        """The STT stalled: until it gives words again, sustained speech over the bot cuts it."""
        self._decider.stt_lost()

    def bot_says(self, text: str) -> None:
        """The bot starts saying `text`: the STT's partials made of its words are its echo."""
        self._decider.bot_says(text)

    # ------------------------------------------------------------------ the VAD's events
    def _playing(self) -> bool:
        """Whether an interruptible bot turn is playing now."""
        task = self.current_playback_task
        return task is not None and not task.done() and self._turns.bot_may_speak

    def on_speech_onset(self, at: float) -> None:
        """Maybe speech (tens of ms of it): pause an interruptible bot turn, keeping its place."""
        self.new_speech()
        if self._playing():
            self._apply(self._decider.onset(self._clock.now()))  # (pauses whatever the STT)

    def on_speech_rejected(self, at: float) -> None:
        """Not speech after all (a cough, a click, a short backchannel): resume where it paused."""
        self._decider.rejected(self._clock.now())
        self._decider.owed_run.kept_run_ended(self._clock.now)
        self._disarm()
        if self.resume():
            self.resumes += 1

    def speech_end(self) -> None:
        """The caller's confirmed speech ended: a turn still paused for it goes on."""
        self._decider.owed_run.kept_run_ended(self._clock.now)  # (if the turn ended during it)
        if self._playing():
            self._apply(self._decider.speech_end(self._clock.now()))

    def _apply(self, verdict: Verdict) -> None:
        if verdict is Verdict.PAUSE:
            self._pause()
        elif verdict is Verdict.RESUME:
            if self.resume():
                self.resumes += 1
        elif verdict is Verdict.CANCEL:
            self._disarm()
            if not self.handle_barge_in():
                self.resume()
            return
        self._arm()

    def _pause(self) -> None:
        outbound = self._outbound()
        if self._paused or outbound is None:
            return
        outbound.pause()  # silence from the next frame; the queue and its writers wait
        self._paused = True
        self.pauses += 1

    def _arm(self) -> None:
        """A timer for the decision window's end, if one is open (else none)."""
        self._disarm()
        deadline = self._decider.deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock.now())
            self._timer = asyncio.get_running_loop().call_later(delay, self._window_closed)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _window_closed(self) -> None:
        self._timer = None
        if self._playing():
            self._decider.answered(self._stt_answered())
            self._apply(self._decider.tick(self._clock.now()))
        else:
            self.resume()

    def new_speech(self) -> None:
        """The caller may have begun to speak: over the bot, or as a new turn."""
        if self._turns.floor is Floor.BOT_TURN:
            self._overlap_open = True  # over the bot: if it does not interrupt, a backchannel
        else:
            self._backchannel_until = None  # the caller speaks anew: their results are a turn

    def resume(self) -> bool:
        """Resume a paused outbound; True if it was paused."""
        outbound = self._outbound()
        if not self._paused or outbound is None:
            return False
        self._paused = False
        outbound.resume()
        return True

    def speech_start(self) -> None:
        """Confirmed speech: the decider's say if the bot is talking, else undo a pause."""
        self.new_speech()
        if self._playing():
            self._decider.answered(self._stt_answered())  # whether the STT is known to work
            self._apply(self._decider.confirmed(self._clock.now()))
        else:
            self.resume()  # paused, but the turn is not interruptible now (or already over)

    def handle_barge_in(self) -> bool:
        """Stop the bot now (spec 2.5); True if playback was cut."""
        task = self.current_playback_task
        if not self._turns.allows(TurnEvent.BARGE_IN) or task is None or task.done():
            return False
        self._turns.handle(TurnEvent.BARGE_IN)  # the bot may not write from this instant
        task.cancel()  # now, within this frame; `bot_turn` waits for the unwinding, bounded
        if self.cut is not None and not self.cut.done():
            self.cut.set_result(None)
        self._player.interrupt()  # fillers cut, queued audio dropped: the next frame is silence
        self.resume()  # the queue is gone: the next bot turn must not start paused
        self._metrics.mark(Mark.BARGE_IN)
        self._observe(CallEventKind.BARGE_IN)
        return True

    # ------------------------------------------------------------------ the bot's turn
    def turn_over(self, *, interrupted: bool) -> None:
        """A bot turn ended (before `PLAYBACK_DONE`): speech that began over it and did not
        interrupt it makes its results still to come a backchannel ("ага"), not a turn."""
        if not interrupted and self._overlap_open and self._turns.floor is Floor.BOT_TURN:
            now = self._clock.now()
            self._backchannel_until = now + _LATE_BACKCHANNEL_S
            self._undecided_at_end = self._decider.deciding()
            self._decider.owed_run.keep(now)  # past the decider's reset below
        self._overlap_open = False
        self._disarm()
        self._decider.reset()
