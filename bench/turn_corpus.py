"""A labelled, seeded corpus of caller audio overlapping the bot's speech, for turn-taking.

Every item is one bot utterance (what the bridge sends, 8 kHz slin) and what comes back from the
line meanwhile (8 kHz slin after G.711 u-law): the bot's own voice as line echo, background line
noise, and, depending on the category, the caller:

- "interruption": a Russian question or objection ("подождите", "нет-нет, не надо", ...) starting
  at a random offset into the bot's speech. Label: the bot must stop.
- "backchannel": "угу", "ага", "да-да", "так", "ну", "мхм", "понятно". Label: the bot goes on.
- "nonspeech": cough-like shaped noise bursts, clicks, a crackle of line noise. Label: goes on.
- "echo": nothing from the caller, only the echo, scanned over levels and delays. Label: goes on.
- "noise": background noise on the caller's line (traffic-like rumble, babble-like modulated
  noise, hiss) for most of the bot's turn, at 20, 10 or 5 dB SNR against a caller speaking at
  -20 dBFS. Label: goes on. Built from a second generator (`seed + 1`), so the other categories'
  items stay those of earlier corpora with the same seed.

Speech is espeak-ng (several voice variants, speeds and pitches) and festival's festvox-ru voice
(speeds only; since 2026-12-02, so a seed's caller voices differ from before), resampled to 8 kHz.
Every level is drawn from `random.Random(seed)`: the same seed gives the same bytes, in any process
(espeak-ng and festival are deterministic for the same text and parameters; sox, which sets
festival's speed, only with `-R`, since 2026-12-03: tests/test_corpus_determinism.py). Synthesis
is cached per process, so a rebuild in the same process cannot show a synthesizer's nondeterminism.

Levels (dBFS RMS over the voiced part): bot -18; caller -26..-14; echo -12..-30 dB under the bot
(40-60 ms late) in every item, -6..-35 dB (20-250 ms) in the "echo" category; line noise -62..-50.
"""

from __future__ import annotations

import audioop
import functools
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bench.festival_voice import PREFIX as FESTIVAL
from bench.festival_voice import festival_pcm
from orchestrator.adapters.tts.espeak import parse_wav
from orchestrator.audio import FRAME_BYTES, SAMPLE_RATE, resample

__all__ = [
    "CATEGORIES",
    "ECHO_LEVELS_DB",
    "HELDOUT2_BACKCHANNELS",
    "HELDOUT3_BACKCHANNELS",
    "HELDOUT3_INTERRUPTIONS",
    "HELDOUT3_VOICES",
    "HELDOUT4_VOICES",
    "HELDOUT2_INTERRUPTIONS",
    "HELDOUT2_VOICES",
    "HELDOUT_BACKCHANNELS",
    "HELDOUT_INTERRUPTIONS",
    "HELDOUT_VOICES",
    "NOISE_SNRS_DB",
    "LineEcho",
    "TurnItem",
    "build_corpus",
    "synth",
]

Category = Literal["interruption", "backchannel", "nonspeech", "echo", "noise"]
CATEGORIES: tuple[Category, ...] = ("interruption", "backchannel", "nonspeech", "echo", "noise")
NOISE_SNRS_DB = (20, 10, 5)
_SPEECH_DBFS = -20.0  # the nominal caller level the SNRs refer to

BOT_PHRASES = (
    "Здравствуйте! Вас приветствует клининговая компания. Я помогу рассчитать стоимость уборки.",
    "Стоимость генеральной уборки квартиры площадью шестьдесят квадратных метров составит девять тысяч рублей.",
    "Уточните, пожалуйста, адрес квартиры и удобное время, и мы пришлём мастера в ближайшие дни.",
)
INTERRUPTIONS = (
    "подождите",
    "нет-нет, не надо",
    "а сколько это стоит?",
    "извините, можно вопрос?",
    "стоп, я не это спрашивал",
    "мне нужна уборка офиса",
    "девушка, послушайте",
    "нет, спасибо, не интересно",
)
BACKCHANNELS = ("угу", "ага", "да-да", "так", "ну", "мхм", "понятно")
# Debian has one Russian festival voice: every set has it, so it is the one voice the sets share.
FESTIVAL_RU = FESTIVAL + "msu_ru_nsh_clunits"
VOICES = ("ru", "ru+m3", "ru+f2", "ru+f4", "ru+m7", "ru-lv", FESTIVAL_RU)
# Held out (`build_corpus(heldout=True)`): written before the decision was tuned, never tuned on;
# other phrases, backchannel variants (two with words that were outside the backchannel list
# until 2026-12-02: "верно", "точно"; no longer a test of those), other voices and speeds, another seed.
HELDOUT_INTERRUPTIONS = (
    "стойте, стойте",
    "погодите минутку",
    "а можно подешевле?",
    "я вас не понимаю",
    "алло, вы меня слышите?",
    "нет, мне это не нужно",
    "секундочку, я запишу",
    "давайте лучше завтра",
    "какой у вас адрес?",
    "я уже заказывал у вас",
)
HELDOUT_BACKCHANNELS = (
    "угу-угу",
    "ага, ага",
    "да",
    "ну да",
    "так-так",
    "хорошо",
    "ясно",
    "мгм",
    "ну ладно",
    "ага, понятно",
    "да, конечно",
    "угу, ясно",
    "да, верно",
    "мхм, точно",
)
HELDOUT_VOICES = ("ru+m1", "ru+m4", "ru+f1", "ru+f3", "ru+m6", "ru+klatt", FESTIVAL_RU)
# A second held-out set, written blind on 2026-12-02 (by a session that had not seen the code or
# the backchannel list) after "верно", "точно" and other agreement words joined the list, so the
# first set's two misses were no longer a test: `build_corpus(heldout=2)`, other voices, never tuned on.
HELDOUT2_INTERRUPTIONS = (
    "соедините меня с оператором",
    "нет, вы меня не поняли",
    "минуточку, я не расслышал",
    "а когда вы сможете приехать",
    "стоп, повторите ещё раз",
    "дайте живого человека",
    "извините, перебью",
    "а это входит в стоимость",
    "нет, я не так сказал",
    "можно я скажу",
    "а скидки у вас есть",
    "хватит, я всё понял",
)
HELDOUT2_BACKCHANNELS = (
    "понял",
    "угу, записываю",
    "да-да-да",
    "ага, хорошо",
    "ясненько",
    "так, понял",
    "ну понятно",
    "ладно",
    "да, слушаю",
    "окей",
    "конечно",
    "ага, ясно",
    "ага, так",
    "понятненько",
    "так, записываю",
    "ну хорошо",
)
HELDOUT2_VOICES = ("ru+m2", "ru+m5", "ru+f5", "ru+klatt2", "ru+klatt3", "ru+m8", FESTIVAL_RU)
# A third held-out set, written blind on 2026-12-02 and not read until the short-partial rule
# (`[interruption] content_words`) and the backchannel list were committed: `build_corpus(heldout=3)`.
# Its phrases may repeat earlier sets' (what callers say most is "ага", "угу"), not its voices.
HELDOUT3_INTERRUPTIONS = (
    "стоп",
    "подождите",
    "секундочку",
    "алло",
    "что-что?",
    "стоп, стоп, стоп",
    "девушка, подождите",
    "повторите, пожалуйста",
    "нет, это не так",
    "вы ошибаетесь",
    "соедините с оператором",
    "позовите живого человека",
    "а сколько это стоит?",
    "я этого не заказывал",
    "подождите, я не понял",
    "нет, адрес другой",
    "а можно доставить побыстрее?",
    "это слишком дорого",
    "минуточку, можно вопрос?",
    "не надо, спасибо",
)
HELDOUT3_BACKCHANNELS = (
    "ага",
    "угу",
    "мгм",
    "да-да",
    "так",
    "так-так",
    "ну да",
    "понятно",
    "ясно",
    "хорошо",
    "ладно",
    "ага, понял",
    "угу, поняла",
    "да, слушаю",
    "записываю",
    "окей",
    "ну",
    "ага-ага",
    "да, да, да",
    "конечно",
)
HELDOUT3_VOICES = ("ru+klatt4", "ru+Andy", "ru+Annie", "ru+Michael", "ru+Linda", "ru+Storm")
# The third set's phrases again in six voices nothing was looked at in, another seed
# (`build_corpus(heldout=4)`): made after the echo bound was committed, to test the pause
# (which depends on the voice's onset and where it falls, not on the words) blind.
HELDOUT4_VOICES = ("ru+klatt5", "ru+klatt6", "ru+Alicia", "ru+Gene", "ru+Max", "ru+Mario")
# Echo levels (dB under the bot) scanned by the "echo" category.
ECHO_LEVELS_DB = (-6, -9, -12, -15, -18, -21, -24, -30, -35)

_BOT_DBFS = -18.0
_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True, slots=True)
class TurnItem:
    """One labelled overlap. Audio is 8 kHz s16le, all the same whole number of 20 ms frames.

    `inbound` is `caller` plus the echo of all of `bot`, through u-law; a replay that pauses the bot
    rebuilds the echo from what it really sent (`echo_of`).

        `onset_s`: when the caller's sound starts in `inbound` (None for echo only); `bot_end_s`: when
        the bot's speech ends in `bot` (silence after). `interrupts`: whether the bot should stop.
    """

    name: str
    category: Category
    bot: bytes
    inbound: bytes
    caller: bytes  # the caller's side alone (their sound and line noise, before u-law)
    interrupts: bool
    onset_s: float | None
    bot_end_s: float
    echo_db: float
    echo_delay_ms: int
    text: str = ""
    meta: dict[str, float | str] = field(default_factory=dict)

    def frames(self) -> Iterator[tuple[bytes, bytes]]:
        """(bot frame sent, inbound frame received) per 20 ms."""
        for i in range(0, len(self.bot), FRAME_BYTES):
            yield self.bot[i : i + FRAME_BYTES], self.inbound[i : i + FRAME_BYTES]


@functools.lru_cache(maxsize=512)
def synth(text: str, voice: str = "ru", speed: int = 160, pitch: int = 50) -> bytes:
    """`text` spoken by espeak-ng, or by festival for a "festival:<voice>" voice (bench/festival_voice.py;
    `pitch` ignored there), 8 kHz s16le, leading/trailing silence trimmed. Cached."""
    if voice.startswith(FESTIVAL):
        pcm, rate = festival_pcm(text, voice.removeprefix(FESTIVAL), speed)
    else:
        args = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", "--stdin"]
        proc = subprocess.run(args, input=text.encode(), capture_output=True, timeout=30, check=True)
        pcm, rate = parse_wav(proc.stdout)
    x = np.frombuffer(resample(pcm, rate, SAMPLE_RATE), dtype=np.int16)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 0.02 * max(1, int(np.abs(x.astype(np.int32)).max())))
    if loud.size:
        x = x[loud[0] : loud[-1] + 1]
    return x.tobytes()


def _to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64)


def _at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """`x` scaled so the RMS of its voiced part (frames above -30 dB of its peak frame) is `dbfs`."""
    n = len(x) // 160 * 160
    if n == 0:
        return x
    frames = x[:n].reshape(-1, 160)
    r = np.sqrt((frames**2).mean(axis=1))
    voiced = r[r > r.max() * 10 ** (-30 / 20)]
    level = float(np.sqrt((voiced**2).mean())) if voiced.size else 1.0
    return x * (32768.0 * 10 ** (dbfs / 20) / max(level, 1e-9))


def _ulaw(x: np.ndarray) -> np.ndarray:
    """Clip to s16 and pass through G.711 u-law and back."""
    pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes()
    return _to_float(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2))


def _shaped_noise(rng: random.Random, n: int, cutoff: float) -> np.ndarray:
    """White noise through a short exponential low-pass (`cutoff` 0..1: higher is brighter)."""
    w = np.random.default_rng(rng.getrandbits(64)).standard_normal(n)
    taps = int(min(64, max(1, 4 / cutoff)))
    kernel = cutoff * (1 - cutoff) ** np.arange(taps)
    return np.convolve(w, kernel)[:n]


def _nonspeech(rng: random.Random) -> tuple[np.ndarray, str]:
    """A cough-like burst, a click train or a crackle; at -30..-14 dBFS."""
    kind = rng.choice(("cough", "clicks", "crackle", "breath"))
    if kind == "cough":
        n = rng.randint(100, 280) * _MS
        env = np.exp(-np.arange(n) / (n / rng.uniform(2.0, 4.0)))
        env[: 8 * _MS] *= np.linspace(0, 1, 8 * _MS)
        x = _shaped_noise(rng, n, rng.uniform(0.2, 0.5)) * env
        if rng.random() < 0.5:  # a double cough
            x = np.concatenate([x, np.zeros(rng.randint(80, 200) * _MS), x * rng.uniform(0.5, 0.9)])
    elif kind == "clicks":
        x = np.zeros(rng.randint(200, 600) * _MS)
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(0, len(x) - 40)
            x[at : at + 40] += np.exp(-np.arange(40) / 6.0) * rng.choice((-1, 1))
    elif kind == "crackle":
        n = rng.randint(150, 500) * _MS
        x = _shaped_noise(rng, n, 0.9) * (
            (np.random.default_rng(rng.getrandbits(64)).random(n) < 0.05) * 4 + 0.2
        )
    else:  # breath: soft, long, dark
        n = rng.randint(300, 700) * _MS
        x = _shaped_noise(rng, n, 0.15) * np.hanning(n)
    return _at_dbfs(x, rng.uniform(-30.0, -14.0)), kind


def _background(rng: random.Random, n: int, snr_db: float) -> tuple[np.ndarray, str]:
    """`n` samples of steady background noise at `snr_db` under a -20 dBFS caller."""
    kind = rng.choice(("traffic", "babble", "hiss"))
    if kind == "traffic":
        x = _shaped_noise(rng, n, rng.uniform(0.03, 0.08))
    elif kind == "babble":  # speech-shaped noise, modulated at syllable rates
        t = np.arange(n) / SAMPLE_RATE
        env = 1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(3.0, 6.0) * t) * np.sin(
            2 * np.pi * rng.uniform(0.3, 1.0) * t
        )
        x = _shaped_noise(rng, n, rng.uniform(0.2, 0.4)) * env
    else:
        x = _shaped_noise(rng, n, 0.9)
    x = x * (32768.0 * 10 ** ((_SPEECH_DBFS - snr_db) / 20) / max(float(np.sqrt((x**2).mean())), 1e-9))
    return x, kind


def _onset(x: np.ndarray) -> int:
    """First sample of `x` above 5 % of its peak."""
    a = np.abs(x)
    loud = np.flatnonzero(a > 0.05 * max(1.0, float(a.max())))
    return int(loud[0]) if loud.size else 0


@dataclass(frozen=True, slots=True)
class _Phrases:
    interruptions: tuple[str, ...]
    backchannels: tuple[str, ...]
    voices: tuple[str, ...]
    speeds: tuple[int, int]


_TUNING = _Phrases(INTERRUPTIONS, BACKCHANNELS, VOICES, (130, 200))
_HELDOUT = _Phrases(HELDOUT_INTERRUPTIONS, HELDOUT_BACKCHANNELS, HELDOUT_VOICES, (120, 210))
_HELDOUT2 = _Phrases(HELDOUT2_INTERRUPTIONS, HELDOUT2_BACKCHANNELS, HELDOUT2_VOICES, (125, 205))
_HELDOUT3 = _Phrases(HELDOUT3_INTERRUPTIONS, HELDOUT3_BACKCHANNELS, HELDOUT3_VOICES, (120, 200))
_HELDOUT4 = _Phrases(HELDOUT3_INTERRUPTIONS, HELDOUT3_BACKCHANNELS, HELDOUT4_VOICES, (125, 195))


def _item(rng: random.Random, index: int, category: Category, phrases: _Phrases = _TUNING) -> TurnItem:
    bot_text = rng.choice(BOT_PHRASES)
    bot = _at_dbfs(_to_float(synth(bot_text, "ru", 170, 50)), _BOT_DBFS)
    bot = _ulaw(bot)  # what the bridge sends is u-law by the time it is on the line
    bot_end = len(bot)
    total = (len(bot) + SAMPLE_RATE) // 160 * 160  # 1 s after the bot ends, whole frames
    bot_full = np.zeros(total)
    bot_full[:bot_end] = bot
    if category == "echo":
        echo_db = float(rng.choice(ECHO_LEVELS_DB))
        delay_ms = rng.randint(20, 250)
    else:
        echo_db = rng.uniform(-30.0, -12.0)
        delay_ms = rng.randint(40, 60)
    inbound = np.zeros(total)
    inbound += _shaped_noise(rng, total, 0.6) * 32768 * 10 ** (rng.uniform(-62.0, -50.0) / 20) * 2.5
    onset_s: float | None = None
    text = ""
    meta: dict[str, float | str] = {}
    if category == "noise":
        snr = float(rng.choice(NOISE_SNRS_DB))
        start = rng.randint(0, int(0.5 * SAMPLE_RATE))
        noise, kind = _background(rng, total - start, snr)
        fade = min(len(noise) // 2, 80 * _MS)  # no click at its ends
        noise[:fade] *= np.linspace(0, 1, fade)
        inbound[start:] += noise
        text = kind
        meta = {"snr_db": snr}
    elif category != "echo":
        if category == "nonspeech":
            caller, text = _nonspeech(rng)
        else:
            text = rng.choice(phrases.interruptions if category == "interruption" else phrases.backchannels)
            voice = rng.choice(phrases.voices)
            speed = rng.randint(*phrases.speeds)
            pitch = rng.randint(25, 75)
            caller = _at_dbfs(_to_float(synth(text, voice, speed, pitch)), rng.uniform(-26.0, -14.0))
            meta = {
                "voice": voice,
                "speed": float(speed),
                "pitch": float(pitch),
                "speech_s": len(caller) / SAMPLE_RATE,
            }
        start = rng.randint(int(0.3 * SAMPLE_RATE), max(int(0.3 * SAMPLE_RATE) + 1, bot_end - SAMPLE_RATE))
        end = min(total, start + len(caller))
        inbound[start:end] += caller[: end - start]
        onset_s = (start + _onset(caller)) / SAMPLE_RATE
    meta["bot_text"] = bot_text
    caller_side = np.clip(np.round(inbound), -32768, 32767)
    inbound = caller_side.copy()
    d = delay_ms * _MS
    inbound[d:] += bot_full[: total - d] * 10 ** (echo_db / 20)
    return TurnItem(
        name=f"{index:04d}-{category}",
        category=category,
        bot=np.clip(bot_full, -32768, 32767).astype(np.int16).tobytes(),
        inbound=np.clip(_ulaw(inbound), -32768, 32767).astype(np.int16).tobytes(),
        caller=caller_side.astype(np.int16).tobytes(),
        interrupts=category == "interruption",
        onset_s=onset_s,
        bot_end_s=bot_end / SAMPLE_RATE,
        echo_db=echo_db,
        echo_delay_ms=delay_ms,
        text=text,
        meta=meta,
    )


def build_corpus(per_category: int = 40, seed: int = 12, *, heldout: int = 0) -> list[TurnItem]:
    """`per_category` items of each category, reproducible from `seed`. `heldout` 1 (or True) to
    4: the callers say that held-out set's phrases in its voices (use another seed too).

    Raises `FileNotFoundError` when espeak-ng, festival or festvox-ru is missing (install them
    with `make system-deps`).
    """
    rng = random.Random(seed)
    if heldout not in (0, 1, 2, 3, 4):
        raise ValueError(f"heldout={heldout!r}: 0 (tuning) to 4")
    phrases = (_TUNING, _HELDOUT, _HELDOUT2, _HELDOUT3, _HELDOUT4)[int(heldout)]
    items: list[TurnItem] = []
    for _ in range(per_category):
        for category in CATEGORIES[:4]:
            items.append(_item(rng, len(items), category, phrases))
    noise_rng = random.Random(seed + 1)
    for _ in range(per_category):
        items.append(_item(noise_rng, len(items), "noise", phrases))
    return items


class LineEcho:
    """The caller's side of one item with the echo of what the bot really sends, frame by frame.

    `frame(i, sent)`: the bot sent `sent` (slin, 320 bytes) as frame i; returns inbound frame i
    (the caller's side plus the echo, delayed and attenuated, through u-law).
    """

    def __init__(self, item: TurnItem) -> None:
        self._caller = np.frombuffer(item.caller, dtype=np.int16).astype(np.float64)
        self._sent = np.zeros(len(self._caller))
        self._delay = item.echo_delay_ms * _MS
        self._gain = 10 ** (item.echo_db / 20)

    def frame(self, i: int, sent: bytes) -> bytes:
        """Inbound frame i, given the bot's frame i."""
        a, b = i * 160, (i + 1) * 160
        self._sent[a:b] = np.frombuffer(sent, dtype=np.int16)
        x = self._caller[a:b].copy()
        lo, hi = a - self._delay, b - self._delay
        if hi > 0:
            seg = self._sent[max(lo, 0) : hi]
            x[len(x) - len(seg) :] += seg * self._gain
        pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes()
        return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
