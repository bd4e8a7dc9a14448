"""Pydantic models of a dialogue map (the JSON edge; runtime types are plain dataclasses).

A map is a set of states. Each state says what the bot plays on entering it
(`system_response.playlist`), which fillers cover slow work there (`fillers`), where each intent
leads (`transitions`), and whether the call ends after its playlist (`action: END_CALL`).
Intents carry example phrases for the classifier and may require entities, with a clarifying
playlist to ask for a missing one. FAQ entries answer known off-script questions from the script
before the LLM is tried. `settings` holds the call-wide knobs (neutral fillers, emergency filler,
non-secure response, global operation timeout, LLM retry bound, thresholds).
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"
_KEY = r"^[a-z_]+:[A-Za-z0-9_.:-]+$"  # e.g. static:greeting, filler:hmm
_HHMM = r"^(?:[01]\d|2[0-3]):[0-5]\d$|^24:00$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CacheItem(_Strict):
    """Pre-synthesized audio from the audio cache; always played to its end (unless barge-in)."""

    type: Literal["cache"]
    key: Annotated[str, Field(pattern=_KEY)]


class FillerItem(_Strict):
    """Cached audio that only covers a wait: skipped when the next item is ready, cut when it becomes ready."""

    type: Literal["filler"]
    key: Annotated[str, Field(pattern=_KEY)]


class TtsItem(_Strict):
    """Text synthesized per call; `{{ session.variables.x }}` placeholders are filled from the session."""

    type: Literal["tts"]
    text_template: Annotated[str, Field(min_length=1, max_length=250)]


PlaylistItem = Annotated[CacheItem | FillerItem | TtsItem, Field(discriminator="type")]
Playlist = list[PlaylistItem]


class SystemResponse(_Strict):
    """What the bot says on entering a state."""

    playlist: Playlist


class NumberEntity(_Strict):
    """A number said in words or digits ("сорок пять", "45", "двести 50", "полтора десятка")."""

    type: Literal["number"]
    min: float | None = None
    max: float | None = None
    # Word stems that mark this entity's number ("метр", "квадрат"): a number next to one wins
    # over other numbers of the phrase ("2 комнаты, 45 метров").
    units: list[str] = []
    # Which numbers count: "cardinal" ("сорок пять"), "ordinal" ("на пятом этаже"), or both.
    forms: Literal["cardinal", "ordinal", "any"] = "any"
    # A hedged number ("около ста", "сто с хвостиком") or a range ("80-90"): "clarify" treats the
    # entity as missing (the clarify playlist asks again); "accept" takes the value said with
    # "около"/"примерно" (never a range, never "с хвостиком").
    approximate: Literal["clarify", "accept"] = "clarify"


class ChoiceEntity(_Strict):
    """One of fixed values, each recognised by its synonyms (lower-case word stems)."""

    type: Literal["choice"]
    values: dict[str, list[str]]


class RegexEntity(_Strict):
    """The first match of a regular expression (group 1 if it has groups)."""

    type: Literal["regex"]
    pattern: str
    # Phrases the pattern must match (`map lint` checks each one).
    examples: list[str] = []


class TimeEntity(_Strict):
    """A time of day ("в десять тридцать", "в половине третьего", "без пятнадцати три").

    12-hour times without "утра"/"вечера" are settled by the map's business hours; the value is a
    time of day, rendered "10:30".
    """

    type: Literal["time"]
    # A vague time ("к обеду", "около трёх", "с десяти до двенадцати"): "clarify" asks again;
    # "accept" takes the time said with "около"/"к обеду" (never a range).
    approximate: Literal["clarify", "accept"] = "clarify"


class DateEntity(_Strict):
    """A date ("двадцать пятого", "послезавтра", "в следующую пятницу", "15 июля").

    Resolved against the call's date in the map's time zone; rendered "25 июня".
    """

    type: Literal["date"]
    # Whether a date before the call's day ("вчера") is a value or missing.
    allow_past: bool = False
    # The latest date accepted, in days after the call's day (None: no limit).
    max_days_ahead: Annotated[int, Field(ge=0)] | None = None


class DigitsEntity(_Strict):
    """A digit string dictated in groups or keyed in (phone, contract, order numbers).

    "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь" -> "89161234567";
    the value is the digits as a string (leading zeros kept).
    """

    type: Literal["digits"]
    min_length: Annotated[int, Field(ge=1)] = 1
    max_length: Annotated[int, Field(ge=1, le=64)] = 32
    # Keyed in (`State.collect_digits`): the key that ends the string early, and how long the
    # caller may pause between keys before what was keyed counts as the whole string.
    terminator: Literal["#", "*"] = "#"
    inter_digit_timeout_s: Annotated[float, Field(gt=0, le=30)] = 4.0


EntitySpec = Annotated[
    NumberEntity | ChoiceEntity | RegexEntity | TimeEntity | DateEntity | DigitsEntity,
    Field(discriminator="type"),
]


class Intent(_Strict):
    """Something the caller may mean, learnt from example phrases."""

    examples: Annotated[list[str], Field(min_length=1)]
    # Entities this intent may carry; extracted from the caller's words into session variables.
    entities: list[str] = []
    # Entities that must be known (said now or earlier in the call) before the intent is acted on.
    required_entities: list[str] = []
    # Played when a required entity is missing; the state does not change.
    clarify_playlist: Playlist = []


_DIGIT = r"^[0-9*#A-D]$"
_ENDPOINT = r"^[A-Za-z0-9_]+/[^\s,()]+$"  # a dial string: PJSIP/operator, PJSIP/100@trunk
_DIALPLAN_NAME = r"^[A-Za-z0-9_+.*#-]+$"


class Transfer(_Strict):
    """Where `action: TRANSFER` hands the caller over, and what happens if nobody takes the call.

    The target is a PJSIP (or other) `endpoint` dialled directly, or a dialplan `context` and
    `extension` (dialled as `Local/<extension>@<context>`, e.g. an extension running `Queue()`).
    The operator's channel gets `VB_INTENT`, `VB_STATE`, `VB_TRANSCRIPT` and `VB_VAR_<NAME>` for
    each of `variables` as channel variables; an endpoint target gets the same as `X-VB-*` SIP
    headers. Busy, no answer within `timeout_s`, or any failure: the call goes on in
    `on_transfer_failed`, whose playlist is played.
    """

    endpoint: Annotated[str, Field(pattern=_ENDPOINT)] | None = None
    context: Annotated[str, Field(pattern=_DIALPLAN_NAME)] | None = None
    extension: Annotated[str, Field(pattern=_DIALPLAN_NAME)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    on_transfer_failed: Annotated[str, Field(pattern=_ID)]
    # Session variables the operator's side gets (missing ones are passed empty).
    variables: list[Annotated[str, Field(pattern=_ID)]] = []
    # How many of the last transcript entries go into VB_TRANSCRIPT (bounded to 1000 characters).
    transcript_turns: Annotated[int, Field(ge=0, le=20)] = 4

    @model_validator(mode="after")
    def _one_target(self) -> Transfer:
        dialplan = self.context is not None or self.extension is not None
        if (self.endpoint is not None) == dialplan:
            raise ValueError("give either endpoint, or context and extension")
        if dialplan and (self.context is None or self.extension is None):
            raise ValueError("a dialplan target needs both context and extension")
        return self

    def dial_string(self) -> str:
        """The ARI endpoint to originate: the endpoint, or `Local/<extension>@<context>`."""
        if self.endpoint is not None:
            return self.endpoint
        return f"Local/{self.extension}@{self.context}"


class CollectDigits(_Strict):
    """Take a keyed-in digit string in this state: the `entity` (a digits entity) gets the string
    and `intent` is routed with it, as if the caller had said it."""

    entity: Annotated[str, Field(pattern=_ID)]
    intent: Annotated[str, Field(pattern=_ID)]


class State(_Strict):
    """One step of the script."""

    system_response: SystemResponse
    # Cache keys played, in order, while slow work (TTS, LLM) for this state runs.
    fillers: list[Annotated[str, Field(pattern=_KEY)]] = []
    # intent id -> next state id.
    transitions: dict[str, str] = {}
    # Variables computed on entering the state: name -> arithmetic over variables ("area * 1500").
    set_variables: dict[str, str] = {}
    # END_CALL: hang up after the playlist. TRANSFER: hand the caller over after it (`transfer`).
    action: Literal["END_CALL", "TRANSFER"] | None = None
    transfer: Transfer | None = None
    # Whether the caller may cut this state's playlist short (by voice or a key); END_CALL and
    # TRANSFER states default to no.
    interruptible: bool | None = None
    # Replaces the map's error playlist in this state.
    error_playlist: Playlist | None = None
    # DTMF key -> intent id, routed like the intent said (before the map's `global_dtmf`).
    dtmf: dict[Annotated[str, Field(pattern=_DIGIT)], str] = {}
    # Keys not in the dtmf tables build a digit string for this entity (see `CollectDigits`).
    collect_digits: CollectDigits | None = None
    # What a backchannel word ("да", "ага", "угу") begun over this state's playlist is: "drop"
    # (not a turn), or "answer" (a turn: a yes/no question; only the words that are whole
    # examples of the intents it routes, or any if none is). None: "answer" when an intent this
    # state routes has a backchannel word as an example, else "drop" (orchestrator/backchannel.py).
    backchannel: Literal["drop", "answer"] | None = None

    @model_validator(mode="after")
    def _transfer_given(self) -> State:
        if (self.action == "TRANSFER") != (self.transfer is not None):
            raise ValueError("action TRANSFER and transfer go together: give both or neither")
        return self


class FaqEntry(_Strict):
    """A known question with its scripted answer."""

    questions: Annotated[list[str], Field(min_length=1)]
    answer: Playlist


class LLMSettings(_Strict):
    """How the off-script LLM fallback is prompted."""

    system_prompt: str = ""
    max_tokens: int = 200
    temperature: float = 0.3


class IntentArbiterSettings(_Strict):
    """The constrained LLM step for turns the local classifier is unsure about (issue 8).

    A final the local classifier routes nowhere (no intent with a transition from the state
    cleared `intent_threshold`, no FAQ entry cleared `faq_threshold`) goes to the step when its
    best local score among the state's options is at least `min_score`; below that the turn is
    clearly off-script and goes straight to the free LLM answer.
    """

    enabled: bool = True
    # On the example map's tuning split (dialogue_maps/eval), every paraphrase the n-gram and
    # lemma classifier missed scored 0.26-0.45, off-script questions 0.12-0.37: at 0.2 the step
    # sees all the misses and half the off-script questions skip it (0.25 skips no more).
    min_score: Annotated[float, Field(ge=0, lt=1)] = 0.2
    # The longest the caller waits in silence for the step (it runs before the bot's turn, like
    # classification): then the turn goes on as none.
    timeout_s: Annotated[float, Field(gt=0, le=3)] = 1.2


class BusinessHours(_Strict):
    """When the business works, "HH:MM" in the map's time zone (`close` not included)."""

    open: Annotated[str, Field(pattern=_HHMM)] = "09:00"
    close: Annotated[str, Field(pattern=_HHMM)] = "21:00"


class Settings(_Strict):
    """Call-wide settings of a map."""

    # Looped while slow work outlasts the state's fillers.
    neutral_filler_keys: Annotated[list[Annotated[str, Field(pattern=_KEY)]], Field(min_length=1)]
    # Played when a provider (STT, TTS, LLM) fails.
    emergency_filler_key: Annotated[str, Field(pattern=_KEY)]
    # Played when the service drains (a deploy) and a call outlasts `[call] drain_timeout_s`, just
    # before the hang-up (None: the emergency filler plays instead).
    drain_goodbye_key: Annotated[str, Field(pattern=_KEY)] | None = None
    # Played when the LLM's answer is judged unsafe, or streaming TTS cannot be opened.
    non_secure_response_key: Annotated[str, Field(pattern=_KEY)]
    # Played when the FlowEngine fails in a state without its own error playlist.
    error_playlist: Playlist
    # Longest wait for slow work (TTS/LLM) before giving up with the emergency filler.
    operation_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # How many times an unsafe LLM answer is retried.
    llm_max_retries: Annotated[int, Field(ge=0, le=5)] = 1
    # Cosine-similarity thresholds for the intent classifier and FAQ lookup.
    intent_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    faq_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    # Partials shorter than this are not classified.
    partial_min_chars: Annotated[int, Field(ge=0)] = 3
    # Caller silence after the bot finished: reprompt after this long (None: wait forever) ...
    no_input_timeout_s: Annotated[float, Field(gt=0, le=300)] | None = 10.0
    # ... with this playlist (default: the current state's own playlist again) ...
    no_input_playlist: Playlist | None = None
    # ... at most this many times in a row; then the goodbye below plays and the call ends.
    no_input_max_reprompts: Annotated[int, Field(ge=0, le=10)] = 2
    no_input_goodbye_playlist: Playlist = []
    # Outbound calls with the answering-machine check: the message left on a machine, after its
    # greeting (empty: the bot hangs up without one).
    voicemail_playlist: Playlist = []
    llm: LLMSettings = LLMSettings()
    intent_arbiter: IntentArbiterSettings = IntentArbiterSettings()
    # IANA time zone of the business: dates ("завтра", "двадцать пятого") are counted from the
    # call's date there.
    time_zone: str = "Europe/Moscow"
    # Settles 12-hour times said without "утра"/"вечера" ("в половине третьего" -> 14:30).
    business_hours: BusinessHours = BusinessHours()
    # End of turn: in a state that expects a number, digits, a date or a time, an STT final that
    # ends on a number ("сто" ...) waits this long after the caller's speech ended for more
    # ("... двадцать"), ms; 0: never (orchestrator/end_of_turn.py).
    turn_number_hold_ms: Annotated[int, Field(ge=0, le=3000)] = 1000
    # End of turn, any state: an STT final whose words cannot end a sentence ("мне нужно",
    # "я хотел бы", "скажите", "запишите на", "э-э") waits this long after the caller's speech
    # ended for the rest ("... к хирургу"), ms; 0: never (orchestrator/turn_completion.py).
    turn_incomplete_hold_ms: Annotated[int, Field(ge=0, le=3000)] = 1000

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Moscow)") from None
        return value


class DialogueMap(_Strict):
    """A whole call script."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="voicebridge dialogue map", populate_by_name=True
    )

    # Lets editors find the JSON Schema ("$schema": "./schema.json"); ignored at run time.
    json_schema_ref: str | None = Field(default=None, alias="$schema")
    version: Literal[1] = 1
    name: str
    language: str = "ru-RU"
    initial_state: Annotated[str, Field(pattern=_ID)]
    settings: Settings
    intents: dict[str, Intent]
    entities: dict[str, EntitySpec] = {}
    states: dict[str, State]
    faq: dict[str, FaqEntry] = {}
    # intent id -> state id, valid from every state (e.g. "operator", "stop calling").
    global_transitions: dict[str, str] = {}
    # DTMF key -> intent id, valid in every state (a state's own `dtmf` wins).
    global_dtmf: dict[Annotated[str, Field(pattern=_DIGIT)], str] = {}
    # Cache key -> the text to synthesize for it, so every key a playlist uses can be produced
    # (`voicebridge cache warm`). A key used by the map but absent here is a lint error.
    audio: dict[Annotated[str, Field(pattern=_KEY)], Annotated[str, Field(min_length=1)]] = {}
    # Whether this map's calls are recorded: true or false overrides the service's `[recording]
    # enabled`; absent: the service decides. A call's VB_RECORD may turn it off, or on unless the
    # map says false (bridge.recording.recording_wanted).
    recording: StrictBool | None = None

    def state(self, state_id: str) -> State:
        """The state `state_id` (KeyError if the map has none)."""
        return self.states[state_id]

    def is_interruptible(self, state_id: str) -> bool:
        """Whether barge-in may cut this state's playlist."""
        st = self.states[state_id]
        if st.interruptible is not None:
            return st.interruptible
        return st.action is None

    def dtmf_intent(self, state_id: str, digit: str) -> str | None:
        """The intent a key means in `state_id`: the state's own `dtmf`, else `global_dtmf`."""
        st = self.states.get(state_id)
        if st is not None and digit in st.dtmf:
            return st.dtmf[digit]
        return self.global_dtmf.get(digit)

    def intent(self, intent_id: str) -> Intent | None:
        """The intent `intent_id`, or None if the map has none."""
        return self.intents.get(intent_id)

    def next_state_id(self, state_id: str, intent_id: str) -> str | None:
        """Where `intent_id` leads from `state_id`: the state's own transition, else a global one."""
        st = self.states.get(state_id)
        if st is not None and intent_id in st.transitions:
            return st.transitions[intent_id]
        return self.global_transitions.get(intent_id)
