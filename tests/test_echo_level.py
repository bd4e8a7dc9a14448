"""LevelGate: the echo gate's level test, and what the fast onset asks of it (`may_be_echo`)."""

from __future__ import annotations

import math

import numpy as np

from bridge.echo_level import LevelGate
from bridge.echo_path import gain_bound

BOT = 4000  # the bot's frame RMS
ECHO = 180  # its echo 27 dB down, under the line noise's level of a real line


def _talk(gate: LevelGate, frames: int, inbound: int) -> None:
    """The bot sends `frames` frames at BOT while the line brings back `inbound` each frame."""
    for _ in range(frames):
        gate.sent(BOT)
        gate.is_echo(inbound)


def test_worst_case_until_the_delay_settles() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    _talk(gate, 5, ECHO)
    assert gate.delay < 0
    # 15 dB under the bot: quieter than the 9 dB worst case, so it may be echo.
    assert gate.may_be_echo(BOT // 6)
    assert not gate.may_be_echo(BOT // 2)


def test_measured_echo_gain_once_settled_lets_a_quieter_caller_through() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    _talk(gate, 200, ECHO)
    assert gate.delay >= 0
    gate.sent(BOT)
    # The caller 15 dB under the bot is far louder than the echo measured (27 dB down, +6 dB).
    assert not gate.may_be_echo(BOT // 6)
    # The echo itself, and up to its measured gain's margin, still may be echo.
    assert gate.may_be_echo(ECHO)
    assert gate.may_be_echo(ECHO * 3 // 2)
    # may_be_echo does not feed the search: asking does not move what the gate learned.
    delay = gate.delay
    for _ in range(50):
        gate.may_be_echo(BOT)
    assert gate.delay == delay and gate.may_be_echo(ECHO)


def test_measured_gain_never_above_the_worst_case() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=20.0)
    # Echo louder than the configured worst case (20 dB): the worst case still bounds it.
    _talk(gate, 200, BOT // 4)
    gate.sent(BOT)
    assert not gate.may_be_echo(BOT // 4)
    assert gate.may_be_echo(BOT // 12)


def test_quiet_bot_is_no_echo() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    for _ in range(30):
        gate.sent(0)
        assert not gate.is_echo(500)
    assert not gate.bot_audible


def test_a_measured_bound_replaces_the_worst_case_before_the_delay_settles() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    _talk(gate, 5, ECHO)
    assert gate.delay < 0 and gate.may_be_echo(BOT // 6)
    gate.bound(ECHO / BOT)  # the line's window: no echo louder than 27 dB down
    assert not gate.may_be_echo(BOT // 6)
    assert gate.may_be_echo(ECHO * 3 // 2)  # within the margin (+6 dB)
    assert gate.is_echo(ECHO)
    gate.bound(1.0)  # the next window's bound is loose (the caller talked in it): still bounded
    assert not gate.may_be_echo(BOT // 6)
    for _ in range(3):  # the least of the last four windows: after four loose ones, the worst case
        gate.bound(1.0)
    assert gate.may_be_echo(BOT // 6) and not gate.may_be_echo(BOT // 2)


def test_gain_bound_of_a_scaled_copy_and_of_windows_that_say_nothing() -> None:
    rng = np.random.default_rng(5)
    y = np.round(rng.standard_normal(4800) * 3000)  # s16 values, as the rings hold
    x = 0.1 * y[1000:3400]  # the echo of y at lag 1000, 20 dB down, nothing else
    assert 0.1 <= gain_bound(x, y) <= 0.2  # a bound: at least the true gain
    assert gain_bound(np.zeros(2400), y) == math.inf  # a muted line: no information
    assert gain_bound(x, np.concatenate((np.zeros(2400), y[:2400]))) == math.inf  # bot not yet on


def test_a_low_bound_expires_after_four_windows() -> None:
    # (A muted window gives no bound at all, `gain_bound` inf; a low one from an echo that then
    # rose lasts four windows, 1.2 s of the bot's speech.)
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    _talk(gate, 5, ECHO)
    gate.bound(0.001)
    assert not gate.may_be_echo(ECHO)
    for _ in range(3):
        gate.bound(math.inf)
        assert not gate.may_be_echo(ECHO)
    gate.bound(math.inf)
    assert gate.may_be_echo(ECHO)


def test_echo_that_rises_is_learnt_again_within_two_seconds() -> None:
    gate = LevelGate(max_delay_ms=300, min_return_loss_db=9.0)
    _talk(gate, 300, 40)  # a quiet echo, 40 dB down: the median learns it
    gate.sent(BOT)
    assert not gate.may_be_echo(BOT // 6)
    loud = BOT // 5  # the echo now 14 dB down (a speakerphone)
    heard = []
    for _ in range(150):
        gate.sent(BOT)
        heard.append(gate.is_echo(loud))
    assert not any(heard[:50])  # first taken for the caller (the median frozen: double talk)
    assert all(heard[110:])  # after 2 s of it, the worst case again: echo
