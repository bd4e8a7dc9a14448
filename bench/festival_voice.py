"""Debian's festival with festvox-ru as a caller voice for the turn-taking corpus (issue 12).

Facts measured on Debian bookworm, festival 1:2.5.0-9, festvox-ru 0.5+dfsg-6 (2026-12-02):

- `text2wave -eval '(voice_msu_ru_nsh_clunits)' -o FILE` reads the text on stdin and writes a
  RIFF WAV, 16 kHz mono s16le; the same text gives the same bytes. Not to a pipe: there it writes
  a header with data size 0, the samples, then the real 44-byte header after them (its seek back
  fails), which a reader takes for samples and sox reads as no samples at all.
- The voice wants UTF-8 (its lexicon splits words with `utf8explode`). KOI8-R text makes its
  letter-to-sound rules fail ("LTS_Ruleset russian_downcase: no rule matches") and no WAV comes out.
- Speech, not spelled letters: trimmed at 8 kHz, over the corpus's 67 caller phrases it lasts
  0.71 x as long as espeak-ng at 170 wpm (median 0.72; espeak pauses longer at commas and spells
  "мхм", "мгм" out), e.g. "подождите" 0.94 s (espeak 0.87 s), "да" 0.38 s, "так" 0.16 s, at
  -16..-22 dBFS RMS: a male voice at a brisk natural pace.
- An unknown voice is not an error: text2wave prints "SIOD ERROR: unbound variable" on stderr,
  exits 0 and writes a near-empty WAV, hence the stderr check.
- `Duration_Stretch` does nothing for this clunits voice (units are joined at their recorded
  length: 2.91 s at stretch 0.5, 1 and 2), so the speed is sox's `tempo -s` (WSOLA, pitch kept).
- sox dithers its 16-bit output with an unseeded generator unless given `-R` (repeatable mode):
  without it the same tempo of the same WAV differed in 42 % of samples (by up to 2 LSB) from run
  to run (sox 14.4.2, 2026-12-03), so every corpus with a festival voice changed its bytes.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from orchestrator.adapters.tts.espeak import parse_wav

__all__ = ["PREFIX", "festival_pcm"]

PREFIX = "festival:"
# espeak-ng words-per-minute that festival's own pace stands for: tempo factor = speed / 170, so
# the corpus's 120-210 wpm is 0.71-1.24 x its recorded pace. Matching espeak's durations instead
# (its own pace is about espeak's 236 wpm) would slow every phrase by 11-49 %, more WSOLA artefact.
# Pitch is the speaker's own: not varied.
_NATURAL_WPM = 170


def festival_pcm(text: str, voice: str, speed: int) -> tuple[bytes, int]:
    """`text` (UTF-8) spoken by festival voice `voice` (e.g. "msu_ru_nsh_clunits") at espeak-ng
    `speed` words per minute: (s16le mono PCM, sample rate in Hz, 16000 for festvox-ru).

    Raises `FileNotFoundError` naming the Debian package when festival, the voice (festvox-ru)
    or sox is missing (`make system-deps` installs them), `RuntimeError` on other festival errors.
    """
    with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
        spoken, out = Path(tmp) / "spoken.wav", Path(tmp) / "out.wav"
        args = ["text2wave", "-eval", f"({_scheme_name('voice_' + voice)})", "-o", str(spoken)]
        try:
            proc = subprocess.run(args, input=text.encode(), capture_output=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError("festival is not installed: apt-get install festival festvox-ru") from exc
        err = proc.stderr.decode(errors="replace").strip()
        if "unbound variable" in err:
            raise FileNotFoundError(f"festival voice {voice!r} is not installed (festvox-ru?): {err}")
        if proc.returncode != 0 or "SIOD ERROR" in err:
            raise RuntimeError(f"text2wave exited {proc.returncode}: {err}")
        if speed == _NATURAL_WPM:
            out = spoken
        else:
            # -R: sox dithers its 16-bit output with an unseeded generator (up to 2 LSB on 42 % of
            # samples, different every run), which made the corpus's bytes change run to run.
            tempo = ["sox", "-R", str(spoken), str(out), "tempo", "-s", f"{speed / _NATURAL_WPM:.4f}"]
            try:
                subprocess.run(tempo, capture_output=True, timeout=60, check=True)
            except FileNotFoundError as exc:
                raise FileNotFoundError("sox is not installed: apt-get install sox") from exc
        return parse_wav(out.read_bytes())


def _scheme_name(name: str) -> str:
    """`name` if it is a plain Scheme symbol; it goes into a festival -eval expression."""
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"festival voice {name!r}: letters, digits and '_' only")
    return name
