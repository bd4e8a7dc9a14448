"""Soak with random faults: `python -m bench.soak --minutes 10 --calls 6` (`make soak`).

N calls at a time for M minutes through `voicebridge serve` in a process of its own
(`bench.soak_service`: its ARI controller against `testkit.fake_ari.FakeAri`, which runs here, its
AudioSocket server, a fresh Orchestrator per call), every peer on real sockets: the callers are
`FakeAsterisk` legs in this process that speak espeak-ng Russian; Redis (`testkit.redis_server`),
the SpeechKit stand-in (STT and TTS over gRPC) and the OpenAI stand-in (LLM over HTTP) are
processes of their own. Meanwhile one fault at a time, drawn from a seeded `random.Random`: a
process killed (SIGKILL, then restarted: Redis comes back empty) or frozen (SIGSTOP, then SIGCONT),
or the ARI websocket dropped and refused for a while. Measured:

- calls completed (the map's goodbye: end reason `end_call`) and the others by end reason (the
  service's `call_end` records), each with the faults that overlapped it; a failed call that
  overlapped no fault is `unexplained`;
- dead air: for each moment the bot owes the caller audio (the call connected: the greeting; the
  caller finished a line: the answer), the wait until the caller hears bot audio; the seconds
  beyond `--bound` (no fault active) or `--fault-bound` (a fault overlapped the wait), and waits
  never answered before the line closed (a call that went mute);
- the service process's RSS (/proc/<pid>/status) and open fds every 10 s, the RSS slope over the
  second half; this (harness) process's RSS apart;
- the service's tasks (its admin `/debug/tasks`) and fds left at the end, against a baseline
  taken when idle before the first call (after every fault was healed and all calls ended), and
  the object types whose count grew (`/debug/objects`); with `--trace-memory-at S`, the places
  whose allocations grew most from S seconds in to the end (`/debug/tracemalloc`).

Prints a table (stdout) and writes the whole record as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.proc_stats import free_port, rss_mb
from bench.soak_report import RESPONSE_WAIT_S, CallRecord, Fault, SoakResult, Wait
from bench.soak_service import ServiceProcess
from testkit.fake_ari import FakeAri
from testkit.fake_asterisk import FakeAsterisk
from testkit.redis_server import RedisProcess
from testkit.sip import espeak_pcm
from testkit.standins.launch import DEMO_CALLER_LINES, DEMO_LLM_ANSWERS
from testkit.standins.process import StandinProcess

ROOT = Path(__file__).resolve().parent.parent
MAP = str(ROOT / "dialogue_maps" / "cleaning_quote.ru.json")
TARGETS = ("redis", "speechkit", "openai", "ari")
QUIET_S = 0.8  # the bot has finished speaking once it has been quiet this long
CALL_SETUP_S = 15.0  # bound on a call's media leg appearing
END_WAIT_S = 30.0  # bound on the bot hanging up after the caller's last line
HANGUP_WAIT_S = 5.0  # the bot finished speaking after the caller's lines: it hangs up within this
RESTART_ATTEMPTS = 3  # a killed peer is started this many times at most
RESTART_S = 60.0  # bound on one start (the machine may be loaded by other jobs)
REPEATS = 4  # times the caller says its last line again while the bot does not hang up


class Soak:
    """The service, its peers, the callers and the fault injector of one soak run."""

    def __init__(
        self,
        *,
        minutes: float,
        concurrent: int,
        seed: int,
        workdir: Path,
        bound_s: float,
        fault_bound_s: float,
        fault_gap_s: tuple[float, float],
        fault_hold_s: tuple[float, float],
        progress: Callable[[str], None],
        trace_memory_at_s: float | None = None,
        service_log: Path | None = None,
    ) -> None:
        self.minutes, self.concurrent, self.seed = minutes, concurrent, seed
        self.workdir = workdir
        self.bound_s, self.fault_bound_s = bound_s, fault_bound_s
        self.fault_gap_s, self.fault_hold_s = fault_gap_s, fault_hold_s
        self.progress = progress
        self.rng = random.Random(seed)
        self.t0 = 0.0
        self.calls: list[CallRecord] = []
        self.faults: list[Fault] = []
        self.rss: list[tuple[float, float]] = []
        self.fds: list[tuple[float, int]] = []
        self.restart_failures = 0  # starts of a killed peer that timed out (harness, not service)
        self.harness_rss: list[tuple[float, float]] = []  # this process: callers, fake ARI
        self.trace_memory_at_s = trace_memory_at_s
        self.memory_top: dict[str, object] = {}
        self.service_log = service_log
        self.active_faults: list[Fault] = []
        self.lines = [(line, espeak_pcm(line)) for line in DEMO_CALLER_LINES]

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> SoakResult:
        """Start everything, soak, heal, measure what is left; stop everything."""
        script = self.workdir / "script.json"
        script.write_text(
            json.dumps(
                {
                    "stt": {"default": [*DEMO_CALLER_LINES, *[DEMO_CALLER_LINES[-1]] * 10]},
                    "llm": {"rules": [list(rule) for rule in DEMO_LLM_ANSWERS]},
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        redis = RedisProcess(self.workdir)
        speechkit = StandinProcess(
            "speechkit", free_port(), script, cwd=ROOT, stderr=self.workdir / "speechkit.log"
        )
        openai_proc = StandinProcess(
            "openai", free_port(), script, cwd=ROOT, stderr=self.workdir / "openai.log"
        )
        fake = FakeAri()
        await redis.start()
        await speechkit.start()
        await openai_proc.start()
        await fake.start()
        port = free_port()
        endpoint = f"127.0.0.1:{speechkit.port}"
        service = ServiceProcess(
            self.workdir,
            {
                "dialogue_map": MAP,
                "redis__url": redis.url,
                "redis__timeout_s": "0.3",
                "providers__tts": "yandex",
                "providers__llm": "openai",
                "yandex__stt_endpoint": endpoint,
                "yandex__tts_endpoint": endpoint,
                "yandex__tls": "false",
                "openai__base_url": f"http://127.0.0.1:{openai_proc.port}/v1",
                "openai__api_key": "standin",
                "openai__moderation": "false",
                "call__stt_stall_s": "2.0",
                "call__stt_recovery_s": "6.0",
                "audiosocket__bind_port": str(port),
                "ami__log_events": "false",
                "ari__url": fake.url,
                "ari__audiosocket_host": f"127.0.0.1:{port}",
                "ari__reconnect_min_s": "0.1",
                "ari__reconnect_max_s": "1.0",
                "log__level": "WARNING",
                "log__format": "text",
            },
            log=self.service_log,
        )
        procs: dict[str, RedisProcess | StandinProcess] = {
            "redis": redis,
            "speechkit": speechkit,
            "openai": openai_proc,
        }
        try:
            await service.start()
            ports = {
                redis.port: "redis",
                speechkit.port: "speechkit",
                openai_proc.port: "openai",
                fake.port: "fake-ari",
                port: "audiosocket",
                service.admin_port: "admin",
            }
            baseline_tasks = await service.tasks()
            baseline_fds, baseline_fd_kinds = service.fd_count(), service.fd_kinds(ports)
            baseline_objects = await service.objects()
            self.t0 = time.monotonic()
            deadline = self.minutes * 60
            self.progress(
                f"soak: {self.minutes:g} min, {self.concurrent} calls at a time, seed {self.seed}, "
                f"service pid {service.pid}"
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sample(deadline, service), name="soak-rss")
                group.create_task(self._inject(deadline, procs, fake), name="soak-faults")
                if self.trace_memory_at_s is not None:
                    group.create_task(self._trace_memory(service), name="soak-tracemalloc")
                for i in range(self.concurrent):
                    group.create_task(self._slot(i, deadline, service, fake), name=f"soak-slot-{i}")
            # Every fault healed, every call ended: let reconnections and re-warming settle.
            async with asyncio.timeout(30):
                while await service.calls_active():  # noqa: ASYNC110 - a gauge, no event to wait on
                    await asyncio.sleep(0.2)
            await asyncio.sleep(3.0)
            leftover = (await service.tasks()) - baseline_tasks
            end_fds, end_fd_kinds = service.fd_count(), service.fd_kinds(ports)
            self.rss.append((round(self.now(), 1), round(service.rss_mb(), 1)))
            self.harness_rss.append((round(self.now(), 1), round(rss_mb(), 1)))
            objects = await service.objects()
            grown = {k: v - baseline_objects.get(k, 0) for k, v in objects.items()}
            if self.trace_memory_at_s is not None and self.now() > self.trace_memory_at_s:
                self.memory_top = await service.get("/debug/tracemalloc")
            return SoakResult(
                minutes=self.minutes,
                concurrent=self.concurrent,
                seed=self.seed,
                calls=self.calls,
                faults=self.faults,
                rss_mb=self.rss,
                fds=self.fds,
                baseline_tasks=dict(baseline_tasks),
                leftover_tasks=dict(leftover),
                baseline_fds=baseline_fds,
                end_fds=end_fds,
                leftover_fd_kinds=dict(end_fd_kinds - baseline_fd_kinds),
                bound_s=self.bound_s,
                fault_bound_s=self.fault_bound_s,
                harness_rss_mb=self.harness_rss,
                objects_grown={k: v for k, v in sorted(grown.items(), key=lambda kv: -kv[1]) if v},
                memory_top=self.memory_top,
                load=_load(),
                restart_failures=self.restart_failures,
            )
        finally:
            await service.close()
            await fake.close()
            await speechkit.close()
            await openai_proc.close()
            redis.close()

    async def _sample(self, deadline: float, service: ServiceProcess) -> None:
        """The service's RSS and fds, and this process's RSS, every 10 s."""
        while self.now() < deadline:
            t = round(self.now(), 1)
            self.rss.append((t, round(service.rss_mb(), 1)))
            self.harness_rss.append((t, round(rss_mb(), 1)))
            self.fds.append((t, service.fd_count()))
            self.progress(
                f"soak: {self.now():5.0f} s, {len(self.calls)} calls, service RSS {self.rss[-1][1]:.1f} MB, "
                f"fds {self.fds[-1][1]}, harness RSS {self.harness_rss[-1][1]:.1f} MB, "
                f"faults {len(self.faults)}, load {_load()}"
            )
            await asyncio.sleep(10.0)

    async def _trace_memory(self, service: ServiceProcess) -> None:
        """Start the service's allocation tracing at `trace_memory_at_s` (the diff is read at the end)."""
        assert self.trace_memory_at_s is not None
        await asyncio.sleep(max(0.0, self.trace_memory_at_s - self.now()))
        await service.post("/debug/tracemalloc")
        self.progress(f"soak: {self.now():5.0f} s, allocation tracing started in the service")

    async def _inject(
        self, deadline: float, procs: dict[str, RedisProcess | StandinProcess], fake: FakeAri
    ) -> None:
        """One fault at a time until `deadline`: wait a random gap, break a random target, hold, heal."""
        while True:
            await asyncio.sleep(self.rng.uniform(*self.fault_gap_s))
            hold = self.rng.uniform(*self.fault_hold_s)
            if self.now() + hold >= deadline - 5:
                return
            target = self.rng.choice(TARGETS)
            action = "drop" if target == "ari" else self.rng.choice(("kill", "freeze"))
            fault = Fault(target, action, round(self.now(), 2))
            self.faults.append(fault)
            self.active_faults.append(fault)
            self.progress(f"soak: {fault.start:5.0f} s fault {target}:{action} for {hold:.1f} s")
            try:
                if target == "ari":
                    await fake.drop_websocket(refuse=True)
                    await asyncio.sleep(hold)
                    fake.allow_websocket()
                    continue
                proc = procs[target]
                if action == "freeze":
                    proc.freeze()
                    await asyncio.sleep(hold)
                    proc.thaw()
                elif isinstance(proc, RedisProcess):
                    proc.kill()
                    await asyncio.sleep(hold)
                    await self._restart(target, proc)  # empty: no persistence
                else:
                    await proc.kill()
                    await asyncio.sleep(hold)
                    await self._restart(target, proc)
            finally:
                fault.end = round(self.now(), 2)
                self.active_faults.remove(fault)

    async def _restart(self, target: str, proc: RedisProcess | StandinProcess) -> None:
        """Start a killed peer again; on a loaded machine a start can outlast its bound: then it
        is killed and started again (the fault lasts until one start succeeds)."""
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                await proc.start(timeout_s=RESTART_S)
                return
            except (TimeoutError, RuntimeError) as exc:
                self.restart_failures += 1
                self.progress(f"soak: {self.now():5.0f} s {target} restart {attempt} failed ({exc!r}); again")
                if isinstance(proc, RedisProcess):
                    proc.kill()
                else:
                    await proc.kill()
        raise RuntimeError(f"{target} did not restart in {RESTART_ATTEMPTS} attempts")

    def _faults_between(self, start: float, end: float) -> list[str]:
        """The faults active at some time in [start, end] (healed ones count for 2 s more)."""
        found = [f for f in self.faults if f.start <= end and (f.end < 0 or f.end + 2.0 >= start)]
        return [f"{f.target}:{f.action}@{f.start:.0f}" for f in found]

    async def _slot(self, slot: int, deadline: float, service: ServiceProcess, fake: FakeAri) -> None:
        await asyncio.sleep(slot * 1.5)  # calls out of step
        while self.now() < deadline:
            record = CallRecord(slot, round(self.now(), 2))
            self.calls.append(record)
            await self._call(record, service, fake)
            record.end = round(self.now(), 2)
            record.faults = self._faults_between(record.start, record.end)
            for wait in record.waits:  # faults healed after the wait began count too
                end = wait.owed + (wait.waited_s if wait.waited_s is not None else 0.0)
                wait.faults = self._faults_between(wait.owed, end)
                wait.bound_s = self.fault_bound_s if wait.faults else self.bound_s

    async def _call(self, record: CallRecord, service: ServiceProcess, fake: FakeAri) -> None:
        if not fake.websocket_up:  # no Stasis app registered: Asterisk refuses the call itself
            record.reason, record.harness = "not_placed", "not_placed"
            await asyncio.sleep(1.0)
            return
        try:
            channel = await fake.place_call()
        except (OSError, RuntimeError) as exc:  # the websocket is down: Asterisk would refuse
            record.reason, record.harness = f"not_placed:{type(exc).__name__}", "not_placed"
            await asyncio.sleep(1.0)
            return
        with contextlib.suppress(TimeoutError):
            await fake.wait_for(
                lambda: fake.leg_of(channel) is not None or channel in fake.deleted, CALL_SETUP_S
            )
        leg = fake.leg_of(channel)
        if leg is None:
            deleted = fake.deleted.get(channel)
            record.reason = f"refused:{deleted.hangup_reason}" if deleted is not None else "no_leg"
            record.harness = "" if deleted is not None else "no_leg"
            with contextlib.suppress(KeyError, OSError, RuntimeError):
                await fake.hangup_caller(channel)
            self._forget(fake, channel, None)
            return
        call_id = str(leg.uuid)
        try:
            owed = self.now()
            # The lines in order, then the last one again while the bot answers but does not
            # hang up: a restarted SpeechKit stand-in starts its script over (it "hears" the
            # area again), so the dialogue needs more lines to reach its goodbye.
            lines = [pcm for _line, pcm in self.lines] + [self.lines[-1][1]] * REPEATS
            for n, pcm in enumerate(lines):
                if not await self._await_bot(record, leg, owed):
                    break
                if n >= len(self.lines):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(HANGUP_WAIT_S):  # the goodbye, then the hang-up
                            await leg.wait_closed()
                    if not leg.connected:
                        break
                    record.repeats += 1
                leg.play(pcm)
                async with asyncio.timeout(RESPONSE_WAIT_S):
                    await leg.wait_until(lambda c: c.audio_queued == 0 or not c.connected)
                owed = self.now()
            else:
                if await self._await_bot(record, leg, owed):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(END_WAIT_S):
                            await leg.wait_closed()
        except (ConnectionError, TimeoutError):
            pass
        if leg.connected:
            record.harness = "stuck_hangup"
            with contextlib.suppress(KeyError, OSError, RuntimeError):
                await fake.hangup_caller(channel)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await leg.wait_closed()
            leg.hangup()
        # The service records the end reason when the call's handler has finished.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while (reason := service.outcome(call_id)) is None:  # noqa: ASYNC110 - a file, no event
                    await asyncio.sleep(0.05)
                record.reason = reason
        self._forget(fake, channel, leg)

    async def _await_bot(self, record: CallRecord, leg: FakeAsterisk, owed: float) -> bool:
        """Wait for bot audio after `owed` and for the bot to finish; False if the line closed."""
        spoken = leg.voice_count
        wait = Wait(round(owed, 2), None, self.bound_s, [])
        record.waits.append(wait)
        try:
            async with asyncio.timeout(RESPONSE_WAIT_S):
                await leg.wait_until(lambda c: c.voice_count > spoken)
            wait.waited_s = round(max(0.0, self.now() - owed), 3)
            async with asyncio.timeout(RESPONSE_WAIT_S):
                await leg.wait_until(_finished)
        except (ConnectionError, TimeoutError):
            if wait.waited_s is None and not leg.connected:
                wait.closed_s = round(self.now() - owed, 3)
            return False
        return True

    @staticmethod
    def _forget(fake: FakeAri, channel: str, leg: FakeAsterisk | None) -> None:
        """Drop the fake ARI's record of a finished call, so the harness does not grow."""
        fake.deleted.pop(channel, None)
        fake.channels.pop(channel, None)
        if leg is not None:
            leg.received.clear()
            for cid in [c for c, ch in fake.deleted.items() if ch.leg is leg]:
                fake.deleted.pop(cid, None)
        del fake.requests[:]


def _load() -> str:
    """The machine's 1-minute load average (the soak shares its cores)."""
    return f"{os.getloadavg()[0]:.1f}"


def _finished(c: FakeAsterisk) -> bool:
    if not c.connected:
        return True
    last = c.received[-1].at if c.received else 0.0
    return c.last_voice_at is not None and last - c.last_voice_at >= QUIET_S


def run_soak(
    *,
    minutes: float,
    concurrent: int,
    seed: int = 1,
    bound_s: float = 4.0,
    fault_bound_s: float = 8.0,
    fault_gap_s: tuple[float, float] = (4.0, 12.0),
    fault_hold_s: tuple[float, float] = (1.0, 8.0),
    progress: Callable[[str], None] = lambda _line: None,
    trace_memory_at_s: float | None = None,
    service_log: Path | None = None,
) -> SoakResult:
    """Run one soak (blocking; its own event loop) and return what it measured."""
    with tempfile.TemporaryDirectory(prefix="voicebridge-soak-") as tmp:
        soak = Soak(
            minutes=minutes,
            concurrent=concurrent,
            seed=seed,
            workdir=Path(tmp),
            bound_s=bound_s,
            fault_bound_s=fault_bound_s,
            fault_gap_s=fault_gap_s,
            fault_hold_s=fault_hold_s,
            progress=progress,
            trace_memory_at_s=trace_memory_at_s,
            service_log=service_log,
        )
        return asyncio.run(soak.run())


def main(argv: list[str] | None = None) -> int:
    """CLI: run the soak, print the table, write the JSON; 1 if a call failed unexplained or
    anything was left behind."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=6, help="calls at a time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bound", type=float, default=4.0, help="s the caller may wait for the bot (no fault)"
    )
    parser.add_argument("--fault-bound", type=float, default=8.0, help="s the caller may wait during a fault")
    parser.add_argument("--json", type=Path, default=Path("soak.json"), help="where to write the record")
    parser.add_argument("--log", type=Path, help="the service's log (WARNING and up) goes here")
    parser.add_argument(
        "--trace-memory-at",
        type=float,
        metavar="S",
        help="start the service's allocation tracing S seconds in; the table lists what grew since",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_soak(
        minutes=args.minutes,
        concurrent=args.calls,
        seed=args.seed,
        bound_s=args.bound,
        fault_bound_s=args.fault_bound,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        trace_memory_at_s=args.trace_memory_at,
        service_log=args.log.resolve() if args.log else None,
    )
    print(result.render(), flush=True)
    args.json.write_text(result.to_json(), encoding="utf-8")
    s = result.summary()
    return 1 if s["failed_unexplained"] or s["leftover_tasks"] or s["waits_never_answered"] else 0


if __name__ == "__main__":
    sys.exit(main())
