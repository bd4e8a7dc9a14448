"""The TRANSFER step: what a transfer passes to the operator's side, and the dial itself.

A scripted turn that enters an `action: TRANSFER` state plays its playlist, then the dialogue
asks the `CallControl` to dial the target with what the call collected (`transfer_variables`).
Answered: the call ends with "transferred". Busy, no answer or a failure: the dialogue goes on
in the state's `on_transfer_failed`, whose playlist is played (`orchestrator.dialogue`).
"""

from __future__ import annotations

import asyncio
import logging

from orchestrator.contracts import CallControl
from orchestrator.dialogue_map.models import Transfer
from orchestrator.domain.models import SessionState, TransferOutcome, TransferRequest

log = logging.getLogger(__name__)

_TRANSCRIPT_CHARS = 1000  # VB_TRANSCRIPT's bound: SIP headers and channel variables stay small
_VALUE_CHARS = 200  # any other VB_* value's bound


def transfer_variables(session: SessionState, spec: Transfer, intent: str | None) -> dict[str, str]:
    """The channel variables a transfer passes to the operator's side: `VB_INTENT`, `VB_STATE`
    (the state the caller was in before the transfer state), `VB_TRANSCRIPT` (the last
    `spec.transcript_turns` entries as "user: ... | bot: ...", at most 1000 characters, the newest
    kept) and `VB_VAR_<NAME>` per `spec.variables` (missing ones empty); each value one line."""

    def clean(value: object, bound: int = _VALUE_CHARS) -> str:
        text = " ".join(str(value).split())  # one line: no CR/LF into a SIP header
        return text[-bound:] if len(text) > bound else text

    history = session.state_history
    out = {
        "VB_INTENT": clean(intent or ""),
        "VB_STATE": clean(history[-1] if history else session.current_state_id),
    }
    turns = session.transcript[-spec.transcript_turns :] if spec.transcript_turns else []
    out["VB_TRANSCRIPT"] = clean(" | ".join(f"{t.role}: {t.text}" for t in turns), _TRANSCRIPT_CHARS)
    for name in spec.variables:
        value = session.variables.get(name)
        out[f"VB_VAR_{name.upper()}"] = "" if value is None else clean(value)
    return out


async def dial_transfer(
    control: CallControl | None,
    session: SessionState,
    spec: Transfer,
    intent: str | None,
    provider_timeout_s: float,
) -> TransferOutcome:
    """Dial the transfer's target through `control` (None: "failed"); never raises. The control
    bounds its own ringing (`spec.timeout_s`); a stuck one is cut after that plus twice
    `provider_timeout_s` (seconds) and counts as "failed"."""
    target = spec.dial_string()
    request = TransferRequest(
        endpoint=target,
        timeout_s=spec.timeout_s,
        variables=transfer_variables(session, spec, intent),
        sip_headers=spec.endpoint is not None and spec.endpoint.upper().startswith("PJSIP/"),
    )
    outcome: TransferOutcome = "failed"
    if control is not None:
        try:
            async with asyncio.timeout(spec.timeout_s + 2 * provider_timeout_s):
                outcome = await control.transfer(request)
        except TimeoutError:
            log.warning("call %s: transfer to %s did not finish in time", session.call_id, target)
    log.info("call %s: transfer to %s: %s", session.call_id, target, outcome)
    return outcome
