"""The response side of one SpeechKit v3 `RecognizeStreaming` call: reading it, and its results.

`yandex_call.RecognizeCall` is one call of a recognition (`YandexRecognitionStream`, in
`yandex.py`); its requests, renewal and resend bookkeeping are there. This module is what comes
back (protocols.md, section 5):

- `read_call()` runs one call to its end: it waits for the channel (`connect_timeout_s`), starts
  the call on the call's request generator, hands every response to `RecognizeCall.handle()`,
  and bounds the call (renewal plus grace, then `drain_timeout_s` once the generator has ended).
  It returns the failure as an `STTError` (gRPC status mapped, timeouts and a local cancel
  retryable), or None after a clean half-close; the supervisor decides what comes next.
- `CallResults.handle()` (a base of `RecognizeCall`) turns responses into `SttResult`s: with
  normalization on, the service sends `final` then `final_refinement`; a final that may carry a
  number (`numbers.py`: a digit or a numeral-like word) or looks incomplete without the
  service's "?" is held for at most `final_refinement_wait_s` (or until the next event) and ONE
  final goes out, normalized if the refinement came in time; any other final goes out at once
  with its raw text (lower case, no punctuation), as it would after the wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, cast

import grpc
from yandex.cloud.ai.stt.v3 import stt_pb2, stt_service_pb2_grpc

from orchestrator.adapters.speechkit import map_rpc_error
from orchestrator.adapters.stt.numbers import may_carry_number
from orchestrator.domain.errors import STTError
from orchestrator.domain.models import SttResult
from orchestrator.turn_completion import looks_incomplete

if TYPE_CHECKING:  # the request side subclasses CallResults: its module imports this one
    from orchestrator.adapters.stt.yandex_call import RecognizeCall, Shared

__all__ = ["PROVIDER", "CallResults", "read_call", "reader_crash"]

log = logging.getLogger(__name__)

PROVIDER = "yandex-stt"


class CallResults:
    """Result handling of one call (`RecognizeCall`'s base): a held final and what went out.

    The request side keeps what to resend (`_confirm`) and when to renew (`in_utterance`).
    """

    replay_ms: int  # the replayed audio at this call's start (the request side sets it)

    def __init__(self, shared: Shared, base_ms: int) -> None:
        self.shared = shared
        self.base_ms = base_ms  # audio before this call's first request: makes result times call-relative
        self.in_utterance = False  # a partial came and its final has not
        self.pending: tuple[int, SttResult] | None = None  # final waiting for its refinement
        self.pending_timer: asyncio.TimerHandle | None = None
        self.emitted_index = -1  # final_index already emitted (a late refinement is dropped)
        self.got_results = False  # the service recognised audio it had not before (see handle)

    def _confirm(self, upto_ms: int) -> None:
        """The service finalized the call's audio up to `upto_ms` (the request side's)."""
        raise NotImplementedError

    def handle(self, resp: stt_pb2.StreamingResponse) -> None:
        """Turn one response into results (emitted through `Shared.emit`)."""
        event = resp.WhichOneof("Event")
        self.shared.answered_at = self.shared.clock.now()  # any response: the service works
        self._confirm(resp.audio_cursors.final_time_ms)
        # Progress, which resets the reconnect budget: a final, or a partial beyond the replayed
        # audio (not the WORKING status every call starts with, nor the same replay heard again).
        if event == "final" or (event == "partial" and _end_ms(resp.partial) > self.replay_ms):
            self.got_results = True
        if event == "final_refinement":
            ref = resp.final_refinement
            # A refinement follows its final directly, so a held final takes it even if the
            # indexes disagree (they should not; the held final is the only candidate anyway).
            if self.pending is not None:
                alt = _best(ref.normalized_text)
                raw = self.pending[1]
                text = alt.text if alt is not None and alt.text.strip() else raw.text
                self._emit_pending(text)
            return  # late or unmatched refinement: its final went out already
        self.flush()  # any other event means the held final is complete
        if event == "partial":
            alt = _best(resp.partial)
            if alt is not None and alt.text.strip():
                self.in_utterance = True
                self.shared.emit(self._result(alt, kind="partial"))
        elif event == "final":
            self.in_utterance = False
            alt = _best(resp.final)
            if alt is not None:
                self._confirm(alt.end_time_ms)
            index = resp.audio_cursors.final_index
            if alt is None or not alt.text.strip() or index <= self.emitted_index:
                return
            self.pending = (index, self._result(alt, kind="final"))
            if not _needs_refinement(alt.text, self.shared.settings.language):
                self.flush()  # the refinement, when it comes, is dropped as late
                return
            loop = asyncio.get_running_loop()
            self.pending_timer = loop.call_later(self.shared.settings.final_refinement_wait_s, self.flush)
        elif event == "status_code" and resp.status_code.code_type == stt_pb2.WARNING:
            cid = self.shared.call_id
            log.warning("call %s: SpeechKit warning: %s", cid, resp.status_code.message)

    def flush(self) -> None:
        """Emit the held final with its raw text (no refinement came in time)."""
        if self.pending is not None:
            self._emit_pending(self.pending[1].text)

    def _emit_pending(self, text: str) -> None:
        assert self.pending is not None
        index, res = self.pending
        self.pending = None
        if self.pending_timer is not None:
            self.pending_timer.cancel()
            self.pending_timer = None
        self.emitted_index = index
        self.shared.emit(
            SttResult(
                text=text,
                is_final=True,
                confidence=res.confidence,
                kind="final",
                audio_start_ms=res.audio_start_ms,
                audio_end_ms=res.audio_end_ms,
                received_at=res.received_at,
            )
        )

    def _result(self, alt: stt_pb2.Alternative, *, kind: str) -> SttResult:
        final = kind == "final"
        return SttResult(
            text=alt.text,
            is_final=final,
            confidence=alt.confidence,
            kind="final" if final else "partial",
            audio_start_ms=self.base_ms + alt.start_time_ms,
            audio_end_ms=self.base_ms + alt.end_time_ms,
            received_at=self.shared.clock.now(),
        )


async def read_call(
    channel: grpc.aio.Channel,
    stub: stt_service_pb2_grpc.RecognizerStub,
    metadata: tuple[tuple[str, str], ...],
    call: RecognizeCall,
) -> STTError | None:
    """Run one gRPC call to its end; returns the failure (None after a clean half-close)."""
    s = call.shared.settings
    try:
        async with asyncio.timeout(s.connect_timeout_s):
            await channel.channel_ready()
    except TimeoutError:
        call.abandon()
        return STTError(
            f"SpeechKit not reachable within {s.connect_timeout_s}s", provider=PROVIDER, retryable=True
        )
    rpc = stub.RecognizeStreaming(call.requests(), metadata=metadata)
    call.call = rpc
    loop = asyncio.get_running_loop()
    # A call lives at most until renewal plus grace, then drains for drain_timeout_s.
    limit = s.renew_after_s + s.renew_grace_s + s.drain_timeout_s + s.keepalive_s
    err: STTError | None = None
    active = True
    try:
        async with asyncio.timeout(limit) as cm:

            def _drain_deadline(_f: object) -> None:
                if active:  # the callback may run after the timeout block has ended
                    # (F821: `cm` is deleted in the finally below, once `active` is False)
                    cm.reschedule(min(cm.when() or math.inf, loop.time() + s.drain_timeout_s))  # noqa: F821

            call.ended.add_done_callback(_drain_deadline)
            try:
                async for resp in rpc:
                    call.handle(resp)
            finally:
                active = False
    except grpc.aio.AioRpcError as exc:
        err = cast(STTError, map_rpc_error(exc, STTError, "RecognizeStreaming", PROVIDER))
    except TimeoutError:
        err = STTError("RecognizeStreaming did not finish in time", provider=PROVIDER, retryable=True)
    except asyncio.CancelledError:
        if _cancelling():
            raise  # aclose(): ours
        # gRPC cancelled the call under us: our request generator raised (see `failure`).
        why = f": {type(call.failure).__name__}: {call.failure}" if call.failure else ""
        err = STTError(f"RecognizeStreaming was cancelled locally{why}", provider=PROVIDER, retryable=True)
    finally:
        call.flush()
        rpc.cancel()
        call.abandon()
        # The timeout points at this task, which keeps the CancelledError of aclose(), whose
        # traceback holds this frame: without this, that cycle outlives the call.
        del cm
    if err is None and call.ended.result() not in ("renew", "eof"):
        err = STTError("SpeechKit closed the stream", provider=PROVIDER, retryable=True)
    if err is not None:
        log.debug("call %s: STT stream at %d ms ended: %s", call.shared.call_id, call.base_ms, err)
    return err


def reader_crash(reader: asyncio.Task[STTError | None], call_id: str) -> STTError | None:
    """A non-retryable STTError for a reader that raised or was cancelled, else None."""
    if reader.cancelled():
        # Only aclose() cancels readers, and it cancels the supervisor too.
        return STTError("STT stream reader was cancelled", provider=PROVIDER, retryable=False)
    exc = reader.exception()
    if exc is None:
        return None
    log.error("call %s: STT stream reader failed", call_id, exc_info=exc)
    return STTError(
        f"STT stream reader failed: {type(exc).__name__}: {exc}", provider=PROVIDER, retryable=False
    )


def _cancelling() -> bool:
    """Whether the current task is being cancelled (no local of the caller's names the task: one
    in a frame its own cancellation's traceback holds would be a reference cycle)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _needs_refinement(raw: str, language: str) -> bool:
    """Whether a raw final must wait for its normalized text.

    Yes if it may carry a number (normalization writes it in digits: a wrong figure is the worst
    mistake), or if it looks incomplete as it stands: the service's "?" would make it a whole
    question (`turn_completion`), and without it the turn would wait longer than the refinement.
    Otherwise the normalized text differs only in case and punctuation that nothing reads.
    """
    return may_carry_number(raw, language) or looks_incomplete(raw)


def _best(update: stt_pb2.AlternativeUpdate) -> stt_pb2.Alternative | None:
    return update.alternatives[0] if update.alternatives else None


def _end_ms(update: stt_pb2.AlternativeUpdate) -> int:
    alt = _best(update)
    return alt.end_time_ms if alt is not None else 0
