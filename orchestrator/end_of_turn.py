"""End of turn by speech timing: STT finals are held until the caller's silence ends the turn.

SpeechKit finalises on its own pause detection, so one answer said with a pause ("сто" (0.4 s),
pause 0.4 s, "двадцать квадратных метров") comes as two finals; taken as they come, "сто" would
be a turn of its own. `EndOfTurn` sits between the recognition results (after the backchannel
screen) and the dialogue's queue:

- A final is held while the gateway's VAD hears the caller (speech started, not ended; or an
  onset not yet decided), and released when the caller's silence since the VAD's speech end
  (`at`: the last voiced frame, not the end of the hangover) reaches the hold:
  - the hold is 0 for a final that looks complete; in a state that expects a number, digits,
    a date or a time, a final that ends on a number word or digits ("сто", "в десять") is held
    the map's `settings.turn_number_hold_ms` (1000 ms by default) from the speech end: the
    caller may go on ("... двадцать"); in any state, a final whose words cannot end a sentence
    ("мне нужно", "я хотел бы", "скажите", "запишите на", "э-э": `looks_incomplete`) is held
    `settings.turn_incomplete_hold_ms` (1000 ms by default) from the speech end;
  - if the caller's voice went on after the final arrived (a new onset, or the VAD's speech end
    `voice_after_s` or more after the final: more speech than that final covers), its own final
    is awaited for at most `final_wait_s` after the speech end; `words_wait_s` if the
    recogniser's partials already showed new words after the held final (their final will
    come; releasing the held one alone first would make "100" a turn of "100" ... "10").
- A rejected onset (too short to barge in: "сто" can be 0.2 s) counts as voice that ended when
  it was rejected.
- The next final while one is held is joined to it (`join`, the later timing): one turn.
  Partials in between go on with the held text before them. SpeechKit's normalisation writes
  numbers in digits, so "сто" ... "двадцать" comes as "100" and "20": where the state expects a
  number, `join_finals` makes that "120" (a round number and a smaller one that fits in its
  zeros), else the texts are joined with a space ("10" "30" stays two numbers: a time).
- An STT error, or the end of the results, releases what is held first.
- Without any VAD report since the final (no VAD, text mode) a final is never held.

A final that arrives in the VAD's hangover (after the last voiced frame, before the speech end
is reported) waits for that report only (at most the hangover, 400 ms by default); it does not
wait for a next final, since no voice followed it.

While the VAD says the caller speaks, a final is held `final_wait_s` from its arrival, and up to
`max_hold_s` only once a partial with new text came after it (the recogniser hears the caller
go on): a noisy line, or a VAD stuck in speech, costs a turn `final_wait_s`, not `max_hold_s`.
Every hold is bounded (`max_hold_s` from the last final, or from the latest partial with new
words after it, even if the VAD never reports the end).
An empty final (noise the recogniser turned into nothing) is dropped: it changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import TypedDict

from orchestrator.contracts import Clock
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.domain.models import SttResult
from orchestrator.entities.morph import number_word
from orchestrator.text import normalize
from orchestrator.turn_completion import looks_incomplete

__all__ = [
    "EndOfTurn",
    "Policy",
    "ends_on_number",
    "expects_number",
    "final_hold",
    "join_finals",
    "state_policy",
]

# How long the final of speech heard after a held final is awaited after that speech ended, s
# (SpeechKit finalises 0.3-0.8 s after the speech ends).
FINAL_WAIT_S = 1.0
# Voice heard this long after a final arrived (the same VAD run going on) is more speech than the
# final covers, s: below it, a VAD run's noisy tail would hold ordinary answers FINAL_WAIT_S.
VOICE_AFTER_S = 0.2
# The final of words the recogniser heard after a held final (a partial with new text) is
# awaited this long after the VAD's speech end, s: it will come, and SpeechKit's end of
# utterance follows its own end of speech, which can be later than the VAD's last voiced frame
# (a quiet "...метров": split corpus, "100" ... "10 метров" whose final came 1.03 s after it).
WORDS_WAIT_S = 2.0
# No final is held longer than this after the last one arrived, whatever the VAD says, s.
MAX_HOLD_S = 4.0

_NUMBER_ENTITIES = frozenset({"number", "digits", "date", "time"})
_LAST_WORD = re.compile(r"([0-9]+|[^\W\d_]+)\W*$")
_TRAILING_DIGITS = re.compile(r"(?<![0-9.,:])([1-9][0-9]*)$")
_LEADING_DIGITS = re.compile(r"^([1-9][0-9]*)(?![0-9.,:])")


def expected_entities(dialogue_map: DialogueMap, state_id: str) -> frozenset[str]:
    """The entity types ("number", "digits", "date", ...) an answer in `state_id` may carry: those
    of the intents it routes (its transitions), and "digits" if it collects keyed-in digits."""
    state = dialogue_map.state(state_id)
    kinds = {"digits"} if state.collect_digits is not None else set()
    for intent_id in state.transitions:
        intent = dialogue_map.intent(intent_id)
        for name in intent.entities if intent is not None else ():
            spec = dialogue_map.entities.get(name)
            if spec is not None:
                kinds.add(spec.type)
    return frozenset(kinds)


def expects_number(dialogue_map: DialogueMap, state_id: str) -> bool:
    """Whether an answer in `state_id` may be a number, digits, a date or a time."""
    return bool(expected_entities(dialogue_map, state_id) & _NUMBER_ENTITIES)


def join_finals(left: str, right: str, *, numbers: bool) -> str:
    """`left` and `right` as one text; with `numbers`, "100" + "20 метров" is "120 метров"."""
    left, right = left.rstrip(), right.lstrip()
    if not left or not right:
        return left or right
    if numbers:
        a, b = _TRAILING_DIGITS.search(left), _LEADING_DIGITS.match(right)
        if a is not None and b is not None:
            zeros = len(a.group(1)) - len(a.group(1).rstrip("0"))
            if len(b.group(1)) <= zeros:
                merged = str(int(a.group(1)) + int(b.group(1)))
                return f"{left[: a.start()]}{merged}{right[b.end() :]}"
    return f"{left} {right}"


def ends_on_number(text: str) -> bool:
    """Whether `text`'s last word is digits or a Russian number word ("сто", "пятого")."""
    m = _LAST_WORD.search(text.lower())
    if m is None:
        return False
    word = m.group(1)
    return word.isdigit() or number_word(word) is not None


class Policy(TypedDict):
    """`EndOfTurn`'s `hold` and `join` for a call (`state_policy`)."""

    hold: Callable[[SttResult], float]
    join: Callable[[str, str], str]


def final_hold(text: str, *, number_state: bool, number_hold_s: float, incomplete_hold_s: float) -> float:
    """How long (s, from the caller's speech end) a final with `text` waits for more: in a state
    that expects a number (`number_state`), a final ending on one waits `number_hold_s` (the
    map's choice for numbers, also over a round number's dangling look); else one whose words
    cannot end a sentence (`looks_incomplete`) waits `incomplete_hold_s`; 0 for the rest."""
    if number_state and ends_on_number(text):
        return number_hold_s
    return incomplete_hold_s if incomplete_hold_s and looks_incomplete(text) else 0.0


def state_policy(dialogue_map: DialogueMap, state_id: Callable[[], str]) -> Policy:
    """The hold and the join of the call's current state (`state_id()`): a final ending on a
    number waits `settings.turn_number_hold_ms` where the state expects a number, digits, a date
    or a time; one whose words cannot end a sentence waits `settings.turn_incomplete_hold_ms`
    (`final_hold`); digits are merged where the state expects a number (and no digit string)."""
    number_hold_s = dialogue_map.settings.turn_number_hold_ms / 1000
    incomplete_hold_s = dialogue_map.settings.turn_incomplete_hold_ms / 1000

    def hold(final: SttResult) -> float:
        return final_hold(
            final.text,
            number_state=expects_number(dialogue_map, state_id()),
            number_hold_s=number_hold_s,
            incomplete_hold_s=incomplete_hold_s,
        )

    def join(left: str, right: str) -> str:
        kinds = expected_entities(dialogue_map, state_id())
        return join_finals(left, right, numbers="number" in kinds and "digits" not in kinds)

    return {"hold": hold, "join": join}


class EndOfTurn:
    """One call's end-of-turn stage; `forward` puts a result on the dialogue's queue.

    `hold`: the hold (s, from the caller's speech end) for a final in the current state (0:
    none; `final_hold`); called when a final is held. `join`: two finals' texts as one (`join_finals`). Synchronous throughout: the VAD's
    events come from the gateway's frame loop, results from the STT listener; the release timer
    runs on the event loop (one `call_later` handle, no task). Times are the injected clock's.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        forward: Callable[[SttResult], None],
        hold: Callable[[SttResult], float],
        join: Callable[[str, str], str] = lambda a, b: f"{a} {b}",
        final_wait_s: float = FINAL_WAIT_S,
        max_hold_s: float = MAX_HOLD_S,
        voice_after_s: float = VOICE_AFTER_S,
        words_wait_s: float = WORDS_WAIT_S,
    ) -> None:
        self._clock = clock
        self._forward = forward
        self._hold = hold
        self._join = join
        self._final_wait_s = final_wait_s
        self._max_hold_s = max_hold_s
        self._voice_after_s = voice_after_s
        self._words_wait_s = words_wait_s
        self._held: SttResult | None = None
        self._arrived = 0.0  # when the last final joined into `_held` arrived (clock time)
        self._hold_s = 0.0  # the held final's own hold
        self._speaking = False  # VAD: speech started and not ended
        self._onset = False  # VAD: an onset not yet confirmed or rejected
        self._last_end: float | None = None  # the last speech end's `at` (last voiced frame)
        self._voice_after: float | None = None  # a speech start or onset after the held final
        self._words_after = False  # a partial with new text came after the held final
        self._words_at = 0.0  # when the latest such partial arrived
        self._timer: asyncio.TimerHandle | None = None
        self.finals_joined = 0  # finals joined to the one before (the caller had not finished)
        self.finals_held = 0  # turns whose first final was not released at once

    # ------------------------------------------------------------------ results
    def result(self, event: SttResult) -> None:
        """A recognition result (partial or final) that the backchannel screen let through."""
        held = self._held
        if not event.is_final:
            if held is not None and event.text.strip():
                # New words, not the held final's repeated: the caller goes on.
                if not normalize(held.text).endswith(normalize(event.text)):
                    self._words_after = True
                    self._words_at = self._clock.now()
                event = dataclasses.replace(event, text=f"{held.text} {event.text}")
                self._decide()
            self._forward(event)
            return
        if not event.text.strip():
            return  # noise the recogniser turned into nothing: no words to hold or join
        joined = held is not None
        if held is not None:
            event = dataclasses.replace(
                held,
                text=self._join(held.text, event.text),
                confidence=min(held.confidence, event.confidence),
                received_at=event.received_at,
                audio_end_ms=event.audio_end_ms,
            )
            self.finals_joined += 1
        self._held = event
        self._arrived = self._clock.now()
        self._voice_after = None
        self._words_after = False
        self._hold_s = self._hold(event)
        self._decide()
        if self._held is not None and not joined:
            self.finals_held += 1

    def flush(self) -> None:
        """Release what is held now (an STT error follows, or the results ended)."""
        self._cancel_timer()
        held, self._held = self._held, None
        if held is not None:
            self._forward(held)

    def close(self) -> None:
        """The call is over: drop what is held, disarm the timer."""
        self._cancel_timer()
        self._held = None

    @property
    def holding(self) -> bool:
        """Whether a final is held."""
        return self._held is not None

    # ------------------------------------------------------------------ the VAD's events
    def speech_onset(self, at: float) -> None:
        self._onset = True
        self._voice(at)

    def speech_rejected(self, at: float) -> None:
        # Too short to barge in ("сто" can be 0.2 s) is still the caller's voice: it ended now
        # (the detector rejects a run within tens of ms of its last voiced frame).
        self._onset = False
        self._last_end = self._clock.now()
        self._decide()

    def speech_start(self, at: float) -> None:
        self._onset = False
        self._speaking = True
        self._voice(at)

    def speech_end(self, at: float) -> None:
        self._onset = False
        self._speaking = False
        self._last_end = at
        self._decide()

    def _voice(self, at: float) -> None:
        held = self._held
        if held is not None and self._voice_after is None:
            self._voice_after = at
        self._decide()

    # ------------------------------------------------------------------ the decision
    def _decide(self) -> None:
        """Release the held final now, or (re)arm the timer for when it is due."""
        held = self._held
        if held is None:
            return
        self._cancel_timer()
        now = self._clock.now()
        arrived = self._arrived
        # Bounded from the held final, or from the recogniser's latest new words after it: a
        # long continuation ("... двадцать квадратных метров", 3 s) is still being heard.
        cap = (self._words_at if self._words_after else arrived) + self._max_hold_s
        if self._speaking or self._onset:
            # The caller is talking: the turn is not over if the recogniser hears new words;
            # without them (line noise, a VAD stuck in speech) the next final is awaited only
            # as long as after any voice.
            due = cap if self._words_after else min(arrived + self._final_wait_s, cap)
        else:
            end = self._last_end
            if end is None or end < arrived - self._max_hold_s:
                due = now  # no VAD report near this final: nothing to wait for
            else:
                hold = self._hold_s
                if self._words_after:
                    hold = max(hold, self._words_wait_s)  # words after the final: their final
                elif self._voice_after is not None or end >= arrived + self._voice_after_s:
                    hold = max(hold, self._final_wait_s)  # voice after the final: its final
                due = min(end + hold, cap)
        if due <= now:
            self.flush()
            return
        self._timer = asyncio.get_running_loop().call_later(due - now, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
