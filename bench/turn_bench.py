"""Turn-taking bench on the labelled corpus (bench/turn_corpus.py): does the bot stop when it should?

Each item is replayed frame by frame through the bridge's own detector, as the gateway and the
Orchestrator run it: the bot's next frame goes out (and to the `EchoGate`), the line returns the
caller's side plus the echo of what was really sent (`LineEcho`), and the inbound frame goes to the
`VoiceActivityDetector`. Its events, and the STT partials the caller's words would give
(bench/turn_partials.py: modelled from the transcript with timing), go to the Orchestrator's
`InterruptionDecider` (orchestrator/interruption.py), which pauses the bot (silence is sent, its
place is kept), resumes it or cancels it. Per configuration:

- interruption recall (cancelled), onset -> pause and onset -> cancel (ms after the caller's sound
  began, p50/p95; the frame that decides counts as complete at its end);
- false cancels and false pauses: backchannels, non-speech, echo alone (overall, at -15 dB or
  quieter), background noise (by SNR), as a fraction of the category's items; the resume gap
  (how long a false pause kept the bot quiet, p95 ms);
- the detector's CPU (energy gate, echo gate, classifier; process time) per second of call audio.

Targets are the issue's (#12): recall >= 0.98, backchannel <= 5 %, non-speech <= 2 %, echo at
-15 dB or quieter 0 %, noise <= 2 %, onset -> pause p95 <= 60 ms, detector <= 3 % of a core.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import percentile, table
from bench.hotpath import machine_info
from bench.turn_corpus import CATEGORIES, ECHO_LEVELS_DB, NOISE_SNRS_DB, LineEcho, TurnItem
from bench.turn_partials import echo_partials, partials
from bridge.echo_gate import EchoGate, EchoSettings
from bridge.vad import VadEventKind, VadSettings, VoiceActivityDetector
from orchestrator.audio import FRAME_BYTES, FRAME_S
from orchestrator.interruption import InterruptionDecider, Verdict
from orchestrator.interruption_settings import InterruptionSettings

__all__ = [
    "CONFIGS",
    "HELDOUT_CONFIGS",
    "TARGETS",
    "TurnConfig",
    "TurnResult",
    "evaluate",
    "render_turns",
    "run_turns",
]


# The VAD alone decides: confirmed speech cancels (the decision before STT partials were used).
_VAD_ALONE = InterruptionSettings(use_partials=False)
# The detector before this bench chose one: webrtcvad, 200 ms of speech confirms.
_WEBRTC_BEFORE = VadSettings(engine="webrtc", min_speech_ms=200, threshold=0.5)
# TEN VAD (opt-in for its licence) at the settings it was measured with as the default.
_TEN = VadSettings(engine="ten", threshold=0.7, min_speech_ms=300)


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """One detector configuration under test; `echo` None: no echo gate."""

    name: str
    vad: VadSettings
    echo: EchoSettings | None
    decision: InterruptionSettings = _VAD_ALONE
    stt_words: bool = True  # False: the STT gives no partials at all (slow or down)
    # The STT gave words earlier in the call (known to work) when the bot's turn begins; False:
    # the call's start (its greeting), words only from this overlap.
    stt_known: bool = True
    # The STT's service answered the call's recognition at its start (SpeechKit's `status_code`
    # WORKING opens every stream): it is known to work before it gives words. False: no answer
    # yet (the service not reached, or down from the start).
    stt_answers: bool = True
    # The STT stalled before the bot's turn (the watchdog told the decider: `stt_lost`), so
    # `sustained_ms`, not `sustained_start_ms`, decides speech with no words.
    stt_lost: bool = False
    echo_words: bool = True  # the decider knows the bot's text (its recognised echo is ignored)


CONFIGS = (
    TurnConfig("webrtc vad", VadSettings(engine="webrtc", min_speech_ms=200, pause_after_ms=0), None),
    TurnConfig("webrtc 2-stage+echo (before)", _WEBRTC_BEFORE, EchoSettings()),
    TurnConfig("silero 2-stage+echo", VadSettings(engine="silero", threshold=0.5), EchoSettings()),
    TurnConfig("ten 2-stage+echo", _TEN, EchoSettings()),
    TurnConfig("webrtc +words", _WEBRTC_BEFORE, EchoSettings(), InterruptionSettings()),
    TurnConfig("silero +words (default)", VadSettings(), EchoSettings(), InterruptionSettings()),
    TurnConfig("ten +words (opt-in)", _TEN, EchoSettings(), InterruptionSettings()),
    TurnConfig(
        "silero +words, call start", VadSettings(), EchoSettings(), InterruptionSettings(), stt_known=False
    ),
    TurnConfig(
        "silero +words, call start, no STT answer",
        VadSettings(),
        EchoSettings(),
        InterruptionSettings(),
        stt_known=False,
        stt_answers=False,
    ),
    TurnConfig(
        "silero +words, bot text unknown",
        VadSettings(),
        EchoSettings(),
        InterruptionSettings(),
        echo_words=False,
    ),
    # "STT mute": down from the call's start, never answering (no words, no status).
    TurnConfig(
        "webrtc +words, STT mute",
        _WEBRTC_BEFORE,
        EchoSettings(),
        InterruptionSettings(),
        stt_words=False,
        stt_answers=False,
    ),
    TurnConfig(
        "silero +words, STT mute",
        VadSettings(),
        EchoSettings(),
        InterruptionSettings(),
        stt_words=False,
        stt_answers=False,
    ),
    # It answers (its stream opened) but gives no words at all: only `max_pause_ms` cancels.
    TurnConfig(
        "silero +words, STT answers, no words",
        VadSettings(),
        EchoSettings(),
        InterruptionSettings(),
        stt_words=False,
    ),
    TurnConfig(
        "silero +words, STT stalled",
        VadSettings(),
        EchoSettings(),
        InterruptionSettings(),
        stt_words=False,
        stt_lost=True,
    ),
    TurnConfig(
        "ten +words, STT mute",
        _TEN,
        EchoSettings(),
        InterruptionSettings(),
        stt_words=False,
        stt_answers=False,
    ),
)

TARGETS: dict[str, tuple[str, float]] = {
    "recall": (">=", 0.98),
    "false_backchannel": ("<=", 0.05),
    "false_nonspeech": ("<=", 0.02),
    "false_echo_15": ("<=", 0.0),
    "false_noise": ("<=", 0.02),
    "pause_p95_ms": ("<=", 60.0),
    "resume_lag_max_ms": ("<=", 20.0),
    "cpu_pct": ("<=", 3.0),
}


@dataclass(frozen=True, slots=True)
class TurnResult:
    """One item's outcome, in s into the item: first pause, cancel (None: none), paused time."""

    item: TurnItem
    paused_at: float | None
    stopped_at: float | None
    resumed_gap_s: float  # silence added by pauses that were resumed (false alarms)
    cpu_s: float = 0.0  # process time in the detector
    # Per resume: its decision -> the end of the first bot frame sent after it, s (one frame: 0.02).
    resume_lags_s: tuple[float, ...] = ()
    repeated: int = 0  # bot frames sent twice or skipped (a resume not at the next unsent frame)


def replay(item: TurnItem, config: TurnConfig) -> TurnResult:
    """Run one item through a fresh detector and decider, pausing, resuming and cancelling the bot."""
    echo = EchoGate(config.echo) if config.echo is not None else None
    vad = VoiceActivityDetector(config.vad, echo)
    decider = InterruptionDecider(config.decision)
    heard: list[tuple[float, str]] = []
    if config.decision.use_partials and config.stt_words:
        heard = sorted(partials(item) + echo_partials(item))
        if config.stt_known:
            decider.words("да", 0.0)  # the caller's earlier answer on this call
    if config.stt_answers:
        decider.answered(0.0)  # the stream's opening status, before the bot's turn
    if config.stt_lost:
        decider.stt_lost()
    if config.echo_words:
        decider.bot_says(str(item.meta.get("bot_text", "")))
    line = LineEcho(item)
    silent = bytes(FRAME_BYTES)
    bot, n_bot = item.bot, int(round(item.bot_end_s / FRAME_S))
    pos = 0  # next bot frame to send
    next_partial = 0
    paused_since: float | None = None
    paused_at: float | None = None
    gap = cpu = 0.0
    resumed_at: float | None = None  # a RESUME decided, its first frame not yet sent
    lags: list[float] = []
    sent: list[int] = []  # the bot frame index of each frame sent
    try:
        for i in range(len(item.caller) // FRAME_BYTES):
            now = i * FRAME_S
            talking = pos < n_bot
            if talking and paused_since is None:
                out = bot[pos * FRAME_BYTES : (pos + 1) * FRAME_BYTES]
                sent.append(pos)
                pos += 1
                if resumed_at is not None:
                    lags.append(now + FRAME_S - resumed_at)
                    resumed_at = None
            else:
                out = silent
            inbound = line.frame(i, out)
            t0 = time.process_time()
            if echo is not None:
                echo.sent(out) if out is not silent else echo.sent_silence()
            event = vad.process(inbound, now)
            cpu += time.process_time() - t0
            if not talking:
                continue
            done = now + FRAME_S  # the deciding frame is complete at its end
            verdicts = []
            # Partials that arrived during this frame first, then the VAD's word on it.
            while next_partial < len(heard) and heard[next_partial][0] <= done:
                verdicts.append(decider.partial(heard[next_partial][1], done))
                next_partial += 1
            if event is not None:
                kind = event.kind
                if kind is VadEventKind.SPEECH_ONSET:
                    verdicts.append(decider.onset(done))
                elif kind is VadEventKind.SPEECH_REJECTED:
                    verdicts.append(decider.rejected(done))
                elif kind is VadEventKind.SPEECH_START:
                    verdicts.append(decider.confirmed(done))
                else:
                    verdicts.append(decider.speech_end(done))
            verdicts.append(decider.tick(done))
            for verdict in verdicts:
                if verdict is Verdict.PAUSE and paused_since is None:
                    paused_since = done
                    if paused_at is None:
                        paused_at = done
                elif verdict is Verdict.RESUME and paused_since is not None:
                    gap += done - paused_since
                    paused_since = None
                    resumed_at = done
                elif verdict is Verdict.CANCEL:
                    first = paused_at if paused_at is not None else done
                    return TurnResult(item, first, done, gap, cpu, tuple(lags), _repeats(sent))
        return TurnResult(item, paused_at, None, gap, cpu, tuple(lags), _repeats(sent))
    finally:
        vad.close()


def _repeats(sent: Sequence[int]) -> int:
    """Frames out of order: each bot frame must follow the one before it (none repeated, none
    skipped over a pause)."""
    return sum(b != a + 1 for a, b in zip(sent, sent[1:], strict=False))


def _rate(results: Sequence[TurnResult], paused: bool = False) -> float | None:
    if not results:
        return None
    return sum((r.paused_at if paused else r.stopped_at) is not None for r in results) / len(results)


def _after_onset(results: Sequence[TurnResult], attr: str) -> list[float]:
    out = []
    for r in results:
        t, onset = getattr(r, attr), r.item.onset_s
        if t is not None and onset is not None and t >= onset:
            out.append((t - onset) * 1000)
    return out


def _p(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def evaluate(items: Sequence[TurnItem], config: TurnConfig) -> dict[str, float | int | None]:
    """The bench's numbers for one configuration (rates 0..1, times ms)."""
    results = [replay(item, config) for item in items]
    by = {c: [r for r in results if r.item.category == c] for c in CATEGORIES}
    audio_s = sum(len(r.item.caller) for r in results) / FRAME_BYTES * FRAME_S
    inter = by["interruption"]
    pauses = _after_onset(inter, "paused_at")
    cancels = _after_onset(inter, "stopped_at")
    gaps = [r.resumed_gap_s * 1000 for r in results if r.stopped_at is None and r.resumed_gap_s > 0]
    lags = [lag * 1000 for r in results for lag in r.resume_lags_s]
    early = sum(
        1
        for r in inter
        if r.stopped_at is not None and r.item.onset_s is not None and r.stopped_at < r.item.onset_s
    )
    out: dict[str, float | int | None] = {
        "items": len(items),
        "recall": _rate(inter),
        "stopped_before_onset": early,
        "pause_p50_ms": _p(pauses, 50),
        "pause_p95_ms": _p(pauses, 95),
        "cancel_p50_ms": _p(cancels, 50),
        "cancel_p95_ms": _p(cancels, 95),
        "resume_gap_p50_ms": _p(gaps, 50),
        "resume_gap_p95_ms": _p(gaps, 95),
        "resume_lag_p50_ms": _p(lags, 50),
        "resume_lag_max_ms": max(lags) if lags else None,
        "frames_repeated": sum(r.repeated for r in results),
        "false_backchannel": _rate(by["backchannel"]),
        "false_nonspeech": _rate(by["nonspeech"]),
        "false_echo": _rate(by["echo"]),
        "false_echo_15": _rate([r for r in by["echo"] if r.item.echo_db <= -15]),
        "paused_backchannel": _rate(by["backchannel"], paused=True),
        "paused_nonspeech": _rate(by["nonspeech"], paused=True),
        "paused_echo": _rate(by["echo"], paused=True),
        "false_noise": _rate(by["noise"]),
        "paused_noise": _rate(by["noise"], paused=True),
        "cpu_pct": 100 * sum(r.cpu_s for r in results) / audio_s if audio_s else None,
    }
    for snr in NOISE_SNRS_DB:
        out[f"false_noise_{snr}db"] = _rate([r for r in by["noise"] if r.item.meta.get("snr_db") == snr])
    for level in ECHO_LEVELS_DB:
        out[f"false_echo_{-level}db"] = _rate([r for r in by["echo"] if r.item.echo_db == level])
    return out


# Held out: the configurations that use words (the decision under test), not the VAD-alone rows.
HELDOUT_CONFIGS = tuple(c for c in CONFIGS if c.decision.use_partials)


def run_turns(
    items: Sequence[TurnItem], configs: Sequence[TurnConfig] = CONFIGS
) -> dict[str, dict[str, float | int | None]]:
    """`evaluate` for each configuration, by name."""
    return {c.name: evaluate(items, c) for c in configs}


def pct(v: float | int | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def ms_or_dash(v: float | int | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def render_turns(results: dict[str, dict[str, float | int | None]], corpus: str = "") -> str:
    """Four plain-text tables: cancels with targets, pauses (false alarms), false cancels by echo
    level and by noise SNR; `corpus` names the corpus in each title."""
    at = f" [{corpus}]" if corpus else ""
    headers = (
        "config",
        "items",
        "recall",
        "early",
        "pause50",
        "pause95",
        "cancel50",
        "cancel95",
        "f_backch",
        "f_nonsp",
        "f_echo",
        "f_echo<=-15",
        "f_noise",
        "cpu%",
    )
    rows = [
        [
            name,
            r["items"],
            pct(r["recall"]),
            r["stopped_before_onset"],
            ms_or_dash(r["pause_p50_ms"]),
            ms_or_dash(r["pause_p95_ms"]),
            ms_or_dash(r["cancel_p50_ms"]),
            ms_or_dash(r["cancel_p95_ms"]),
            pct(r["false_backchannel"]),
            pct(r["false_nonspeech"]),
            pct(r["false_echo"]),
            pct(r["false_echo_15"]),
            pct(r["false_noise"]),
            "-" if r["cpu_pct"] is None else f"{r['cpu_pct']:.2f}",
        ]
        for name, r in results.items()
    ]
    targets = ", ".join(f"{k} {op} {v:g}" for k, (op, v) in TARGETS.items())
    main = table(
        headers, rows, title=f"Turn-taking{at}: cancels (f_ = false cancel rate; targets: {targets})"
    )
    ph = (
        "config",
        "paused_backch",
        "paused_nonsp",
        "paused_echo",
        "paused_noise",
        "silence50",
        "silence95",
        "resume50",
        "resume_max",
        "repeated",
    )
    prows = [
        [
            name,
            pct(r["paused_backchannel"]),
            pct(r["paused_nonspeech"]),
            pct(r["paused_echo"]),
            pct(r["paused_noise"]),
            ms_or_dash(r["resume_gap_p50_ms"]),
            ms_or_dash(r["resume_gap_p95_ms"]),
            ms_or_dash(r["resume_lag_p50_ms"]),
            ms_or_dash(r["resume_lag_max_ms"]),
            r["frames_repeated"],
        ]
        for name, r in results.items()
    ]
    pauses = table(
        ph,
        prows,
        title=(
            f"False alarms{at} that only paused the bot: the whole silence of a false pause (onset -> resume, ms),"
            " the resume (its decision -> end of the first resumed frame, ms; target <= 20) and bot frames"
            " repeated or skipped"
        ),
    )
    eh = ("config", *(f"{lv}dB" for lv in ECHO_LEVELS_DB))
    erows = [[name, *(pct(r[f"false_echo_{-lv}db"]) for lv in ECHO_LEVELS_DB)] for name, r in results.items()]
    nh = ("config", *(f"SNR {snr} dB" for snr in NOISE_SNRS_DB))
    nrows = [
        [name, *(pct(r[f"false_noise_{snr}db"]) for snr in NOISE_SNRS_DB)] for name, r in results.items()
    ]
    return "\n\n".join(
        (
            main,
            pauses,
            table(eh, erows, title=f"False cancels{at} by echo alone, by echo level (dB under the bot)"),
            table(
                nh, nrows, title=f"False cancels{at} by background noise, by SNR (against a -20 dBFS caller)"
            ),
        )
    )


def write_json(
    path: Path,
    results: dict[str, dict[str, float | int | None]],
    *,
    seed: int,
    per_category: int,
    heldout: dict[str, dict[str, float | int | None]] | None = None,
    heldout_seed: int | None = None,
    heldout2: dict[str, dict[str, float | int | None]] | None = None,
    heldout2_seed: int | None = None,
    heldout3: dict[str, dict[str, float | int | None]] | None = None,
    heldout3_seed: int | None = None,
    heldout4: dict[str, dict[str, float | int | None]] | None = None,
    heldout4_seed: int | None = None,
) -> None:
    """The results with the corpus parameters and targets, as JSON; `heldout`, `heldout2` ...
    `heldout4`: the held-out corpora's (`build_corpus(heldout=1 ... 4)`, seeds `heldout_seed` ...)."""
    doc: dict[str, object] = {
        "machine": machine_info(),
        "seed": seed,
        "per_category": per_category,
        "targets": TARGETS,
        "configs": results,
    }
    if heldout is not None:
        doc["heldout"] = {"seed": heldout_seed, "configs": heldout}
    if heldout2 is not None:
        doc["heldout2"] = {"seed": heldout2_seed, "configs": heldout2}
    if heldout3 is not None:
        doc["heldout3"] = {"seed": heldout3_seed, "configs": heldout3}
    if heldout4 is not None:
        doc["heldout4"] = {"seed": heldout4_seed, "configs": heldout4}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
