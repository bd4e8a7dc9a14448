"""The in-process driver (bench/inproc.py): its --verify hash is what old and new builds are
compared by, so it must not depend on the run, and must see what the gateway decided."""

from __future__ import annotations

from bench.inproc import run_inproc


def test_the_verify_hash_is_the_same_on_every_run_and_changes_with_what_is_decided() -> None:
    # Caught: arrival times from the loop clock in --verify (a new hash each run), and a hash
    # that misses the echo gate's part (the echo on the line changes residuals and events).
    first = run_inproc(4, 400, None, verify=True)
    again = run_inproc(4, 400, None, verify=True)
    assert first["events"] > 0 and first["hash"] == again["hash"]
    echo = run_inproc(4, 400, -20.0, verify=True)
    assert echo["hash"] != first["hash"]
    assert "hash" not in run_inproc(2, 50, None, verify=False)  # timing runs: the loop clock, no hash
