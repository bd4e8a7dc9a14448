"""The per-call figures' callers in a process of their own (`--figure-callers process`, the default).

In production the callers are Asterisk, another process: their 50 frames/s each way per call do
not run on the bridge's loop. Here the `FakeAsterisk` callers of `bench.call_figures` and
`bench.standin_levels` run in a child process (spawned, pinned to the other core than the bridge,
which this pins to the first; SCHED_FIFO as the bench with `realtime`), and the bench, on the
bridge's side, drives them over a `multiprocessing` pipe: the call script stays where it was (it
waits on the bridge-side probes), the child only connects, plays the clip it is told to, hangs up
and says when a connection closed. Every figure is still measured on the bridge side.

Parent -> child (tuples): ("clip", id, pcm) once per clip; ("connect", port, uuid);
("play", uuid, clip id); ("hangup", uuid); ("close_all",); ("exit",).
Child -> parent: ("hello", scheduling, gc thresholds, gc freeze count); ("connected", uuid, error or None);
("closed", uuid, counters); ("all_closed", the child's pacer lateness ms); ("error", text).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import os
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.callers import commands, prepare_process
from bridge.gc_policy import GcSettings, apply_gc_settings
from testkit.fake_asterisk import FakeAsterisk, FakeCallerPool

__all__ = ["CallerProcess", "RemoteCaller", "RemoteCallerPool", "caller_main"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_REPLY_S = 30.0  # bound on the child's answer to a request


class CallerProcess:
    """The caller process (`with CallerProcess() as callers:`), for as long as a bench part runs.

    Pins this process (the bridge) to the first core it may use and the child to the second
    (both free with fewer than two cores); the bridge's affinity is restored on exit."""

    def __init__(self, *, realtime: bool = True) -> None:
        self._realtime = realtime
        self.conn: Connection | None = None
        self.proc: BaseProcess | None = None
        self.scheduling = ""  # what the child got: "SCHED_FIFO", "nice ...", "default priority"
        self.collector: tuple[tuple[int, ...], int] = ((), 0)  # the child's gc thresholds, frozen objects
        self.cores: tuple[int | None, int | None] = (None, None)  # (bridge, callers)
        self._affinity: set[int] | None = None
        self._clips: dict[bytes, int] = {}

    def __enter__(self) -> CallerProcess:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            self.cores = (cpus[0], cpus[1])
        self.conn, child = mp.Pipe()
        # Spawned: a clean interpreter, no copy of the bridge's loop, threads or probes.
        self.proc = mp.get_context("spawn").Process(
            target=caller_main, args=(child, self.cores[1], self._realtime), name="bench-callers", daemon=True
        )
        self.proc.start()
        child.close()
        try:
            if not self.conn.poll(60):
                raise RuntimeError("the caller process did not start within 60 s")
            hello = self.conn.recv()
            if hello[0] != "hello":
                raise RuntimeError(f"the caller process did not start: {hello}")
            self.scheduling, self.collector = hello[1], (tuple(hello[2]), hello[3])
            if self.cores[0] is not None:
                self._affinity = os.sched_getaffinity(0)
                os.sched_setaffinity(0, {self.cores[0]})
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._affinity is not None:
            os.sched_setaffinity(0, self._affinity)
            self._affinity = None
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send(("exit",))
        if self.proc is not None:
            self.proc.join(15)
            if self.proc.is_alive():
                self.proc.kill()  # only our own child, by handle
                self.proc.join()
        if self.conn is not None:
            self.conn.close()

    def send(self, *msg: object) -> None:
        assert self.conn is not None, "CallerProcess used outside its `with`"
        self.conn.send(msg)

    def clip_id(self, pcm: bytes) -> int:
        """The clip's id in the child, sending it there the first time (a clip crosses the pipe once)."""
        cid = self._clips.get(pcm)
        if cid is None:
            cid = self._clips[pcm] = len(self._clips)
            self.send("clip", cid, pcm)
        return cid

    def cpu_s(self) -> float:
        """User + system CPU seconds the caller process has used so far."""
        assert self.proc is not None and self.proc.pid is not None
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        return 0.0


class RemoteCaller:
    """One caller in the child, as the bench sees it: `play` and `wait_closed`, as `FakeAsterisk`."""

    def __init__(self, pool: RemoteCallerPool, call_uuid: uuid.UUID) -> None:
        self.uuid = call_uuid
        self._pool = pool
        self.closed: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def play(self, pcm: bytes) -> None:
        """Have the child queue `pcm` (8 kHz s16) on this caller, one frame per tick."""
        self._pool.play(self, pcm)

    async def wait_closed(self) -> None:
        """Wait until the child says the TCP connection is closed (by either side)."""
        await asyncio.shield(self.closed)


class RemoteCallerPool:
    """The callers of one event loop (one level) in the caller process, on the server's `port`:
    `connect`, `hangup`, `callers` and `close` as `FakeCallerPool`'s. Reads the child's replies on
    this loop (no thread)."""

    def __init__(self, proc: CallerProcess, port: int) -> None:
        assert proc.conn is not None, "CallerProcess used outside its `with`"
        self.proc, self.port, self._conn = proc, port, proc.conn
        self.callers: list[RemoteCaller] = []
        self._live: dict[str, RemoteCaller] = {}
        self._connecting: dict[str, asyncio.Future[None]] = {}
        self._all_closed: asyncio.Future[float] | None = None
        self.late_ms = 0.0  # the child's pacer's worst tick lateness, known after `close`
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            msg = self._conn.recv()
        except EOFError:
            self._loop.remove_reader(self._conn.fileno())
            msg = ("error", "the caller process exited")
        kind = msg[0]
        if kind == "connected":
            fut = self._connecting.pop(msg[1], None)
            if fut is not None and not fut.done():
                if msg[2] is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(ConnectionError(msg[2]))
        elif kind == "closed":
            caller = self._live.pop(msg[1], None)
            if caller is not None and not caller.closed.done():
                caller.closed.set_result(msg[2])
        elif kind == "all_closed":
            if self._all_closed is not None and not self._all_closed.done():
                self._all_closed.set_result(float(msg[1]))
        else:  # the child failed: every wait on it fails now rather than at its bound
            err = RuntimeError(f"caller process: {msg[1:]}")
            waiting: list[asyncio.Future[Any]] = [*self._connecting.values()]
            waiting += [c.closed for c in self._live.values()]
            for w in waiting:
                if not w.done():
                    w.set_exception(err)
            if self._all_closed is not None and not self._all_closed.done():
                self._all_closed.set_exception(err)

    async def connect(self, call_uuid: uuid.UUID, *, keep_messages: bool = False) -> RemoteCaller:
        """Connect one caller in the child (it sends the UUID); returns once it is connected."""
        del keep_messages  # the child keeps running counters only
        key = str(call_uuid)
        caller = RemoteCaller(self, call_uuid)
        self._live[key] = caller
        done = self._connecting[key] = self._loop.create_future()
        self.proc.send("connect", self.port, key)
        try:
            await asyncio.wait_for(done, _REPLY_S)
        except BaseException:
            self._live.pop(key, None)
            self._connecting.pop(key, None)
            raise
        self.callers.append(caller)
        return caller

    def play(self, caller: RemoteCaller, pcm: bytes) -> None:
        self.proc.send("play", str(caller.uuid), self.proc.clip_id(pcm))

    def hangup(self, caller: RemoteCaller) -> None:
        """Hang the caller up (EOF), as `FakeCallerPool.hangup`."""
        self.proc.send("hangup", str(caller.uuid))

    async def close(self) -> None:
        """Hang everyone up, stop the child's timer (its lateness in `late_ms`) and stop reading."""
        self._all_closed = self._loop.create_future()
        try:
            self.proc.send("close_all")
            self.late_ms = await asyncio.wait_for(self._all_closed, _REPLY_S)
        finally:
            self._loop.remove_reader(self._conn.fileno())


# --- the child ---


class _Side:
    """The child's callers: a `FakeCallerPool` per port, each connection watched until it closes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.clips: dict[int, bytes] = {}
        self.pool: FakeCallerPool | None = None
        self.by_uuid: dict[str, FakeAsterisk] = {}
        self.watchers: set[asyncio.Task[None]] = set()

    async def connect(self, port: int, key: str) -> None:
        if self.pool is None or self.pool.port != port:
            await self.close_all()
            self.pool = FakeCallerPool("127.0.0.1", port)
        try:
            caller = await asyncio.wait_for(self.pool.connect(uuid.UUID(key), keep_messages=False), _REPLY_S)
        except Exception as exc:  # noqa: BLE001 - said to the bench, which fails that call
            self.conn.send(("connected", key, repr(exc)))
            return
        self.by_uuid[key] = caller
        self.conn.send(("connected", key, None))
        task = asyncio.create_task(self._watch(key, caller), name=f"bench-caller-watch-{key}")
        self.watchers.add(task)
        task.add_done_callback(self.watchers.discard)

    async def _watch(self, key: str, caller: FakeAsterisk) -> None:
        await caller.wait_closed()
        pool = self.pool
        if pool is not None and caller in pool.callers:
            pool.pacer.remove(caller)
            pool.callers.remove(caller)
        self.by_uuid.pop(key, None)
        counters = {
            "frames_sent": caller.frames_sent,
            "audio_received": caller.audio_count,
            "voice_received": caller.voice_count,
            "hangup_received": caller.hangup_received,
            "protocol_error": caller.protocol_error,
        }
        with contextlib.suppress(OSError):  # the bench was killed: nobody to tell, its EOF ends us
            self.conn.send(("closed", key, counters))

    async def close_all(self) -> float:
        """Hang up every caller left and stop the timer; the pacer's worst lateness, ms."""
        pool, self.pool = self.pool, None
        if pool is None:
            return 0.0
        await asyncio.wait_for(pool.close(), _REPLY_S)
        await asyncio.wait_for(asyncio.gather(*self.watchers, return_exceptions=True), _REPLY_S)
        return pool.pacer.max_lateness_s * 1000


async def _serve(conn: Connection) -> None:
    queue = await commands(conn)
    side = _Side(conn)
    while True:
        cmd = await queue.get()
        kind = cmd[0]
        if kind == "clip":
            side.clips[cmd[1]] = cmd[2]
        elif kind == "connect":
            await side.connect(cmd[1], cmd[2])
        elif kind == "play":
            if (caller := side.by_uuid.get(cmd[1])) is not None:
                caller.play(side.clips[cmd[2]])
        elif kind == "hangup":
            if (caller := side.by_uuid.get(cmd[1])) is not None and side.pool is not None:
                side.pool.hangup(caller)
        elif kind == "close_all":
            conn.send(("all_closed", await side.close_all()))
        else:
            await side.close_all()
            return


def caller_main(conn: Connection, cpu: int | None, realtime: bool) -> None:
    """Process entry point: pin, prioritise, settle the collector, say hello, serve until ("exit",)
    or the pipe's EOF."""
    scheduling = prepare_process(cpu, 0, realtime)
    logging.basicConfig(level=logging.ERROR)
    # As in the bridge's process, where the callers ran inline: start-up objects frozen, full
    # collections rarer (`bridge.gc_policy`). Without it the collector walked every imported
    # module's objects (a quarter of one perf profile's samples at 200 calls; the child's CPU %
    # did not move measurably, bench/README.md section 5).
    gc.freeze()
    apply_gc_settings(GcSettings())
    conn.send(("hello", scheduling, gc.get_threshold(), gc.get_freeze_count()))
    try:
        asyncio.run(_serve(conn))
    except Exception as exc:  # noqa: BLE001 - the bench hears of it, rather than waiting out its bounds
        with contextlib.suppress(OSError):
            conn.send(("error", repr(exc)))
        raise
