"""AMI (panoramisk): originate outbound calls into the Stasis app, and log call events.

An outbound call is `Originate(Channel=PJSIP/<number>@trunk, Context=voicebridge-outbound,
Exten=s)` with `VB_APP`/`VB_NUMBER` channel variables (asterisk_conf/extensions.conf): when the
callee answers, its channel enters our Stasis app like an inbound call, so the ARI controller
handles it the same way. We choose the channel's id (`ChannelId`), which is also its ARI id.

panoramisk facts (protocols.md 4.2): the constructor is keyword-only; `connect()` only opens TCP and
login completes afterwards; it reconnects by itself after a connection loss, also after
`close()` unless told not to (`_Manager` below stops that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Annotated, Any

import pydantic.dataclasses
from panoramisk import Manager
from pydantic import ConfigDict, Field

from bridge.asterisk_names import (
    AmiSecret,
    AsteriskName,
    check_asterisk_name,
    warn_if_default_credentials,
)
from orchestrator.domain.errors import VoicebridgeError

__all__ = [
    "DEFAULT_EVENTS",
    "AmiError",
    "AmiEventLogger",
    "AmiSettings",
    "OriginateError",
    "originate",
]

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
DEFAULT_EVENTS = (
    "Newchannel",
    "DialBegin",
    "DialEnd",
    "Hangup",
    "OriginateResponse",
    "BridgeEnter",
    "BridgeLeave",
)


class AmiError(VoicebridgeError):
    """AMI could not be reached, refused the login, or an action failed."""


class OriginateError(AmiError):
    """The originated call did not get answered (busy, no answer, unreachable, ...).

    `reason`: Asterisk's originate Reason code when it reported one ("5" busy, "3" no answer,
    "8" congestion, "1" hung up, "0" failure; see `_REASONS`), None when no answer came at all.
    `cause`: the originated channel's hangup cause from its AMI Hangup event; Asterisk 22 reports
    a PJSIP callee's 486 Busy Here as Reason 0 with cause 17, so the cause is what tells busy."""

    def __init__(self, message: str, reason: str | None = None, cause: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.cause = cause  # the channel's Q.850 hangup cause (17 busy, 19 no answer), if seen


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class AmiSettings:
    """Where AMI is (asterisk_conf/manager.conf) and how we use it (section `[ami]`).

    `username`, `trunk` and `context` follow `bridge.asterisk_names`' name rule (shared with ARI);
    `secret` its AMI secret rule (anything but line breaks).
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5038
    username: AsteriskName = "voicebridge"
    secret: AmiSecret = "voicebridge"
    trunk: AsteriskName = "trunk"  # PJSIP endpoint that outbound calls go through
    context: AsteriskName = "voicebridge-outbound"  # dialplan context of originated calls
    # Bound on connecting and logging in, s.
    login_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # panoramisk's pause before reconnecting a lost, logged-in connection, s.
    reconnect_s: Annotated[float, Field(gt=0)] = 2.0
    # `serve` logs hangup causes and call events from AMI; a failed login is retried with a
    # backoff that doubles up to this, s.
    log_events: bool = True
    log_retry_max_s: Annotated[float, Field(gt=0)] = 30.0


# A call id (the AudioSocket UUID) inside a channel name or bridge id.
_CALL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """A Manager that stays closed after `close()` (panoramisk would reconnect)."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.closed = False

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            return None
        return super().connect(*args, **kwargs)

    def close(self) -> None:
        self.closed = True
        super().close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.authenticated = False  # panoramisk leaves it True while reconnecting
        if not self.closed:
            super().connection_lost(exc)


async def _login(settings: AmiSettings, **extra: Any) -> _Manager:
    """Connect and log in, bounded by `login_timeout_s`; raises AmiError with the reason."""
    where = f"AMI {settings.username}@{settings.host}:{settings.port}"
    warn_if_default_credentials("AMI", "[ami] username/secret", settings.username, settings.secret)
    manager = _Manager(
        loop=asyncio.get_running_loop(),
        host=settings.host,
        port=settings.port,
        username=settings.username,
        secret=settings.secret,
        ssl=False,
        encoding="utf8",
        reconnect_timeout=settings.reconnect_s,
        log=logging.getLogger("panoramisk.manager"),
        **extra,
    )
    try:
        async with asyncio.timeout(settings.login_timeout_s):
            try:
                await manager.connect()
            except OSError as exc:
                raise AmiError(f"{where}: cannot connect: {exc}") from exc
            # connection_made(), a done-callback of the connect task registered before our await,
            # has already run and sent Login: its future is set now.
            if manager.authenticated_future is not None:
                response = await manager.authenticated_future
                if not response.success:
                    raise AmiError(f"{where}: login refused: {response.get('Message')}")
    except TimeoutError:
        manager.close()
        raise AmiError(f"{where}: no login within {settings.login_timeout_s} s") from None
    except BaseException:
        manager.close()
        raise
    return manager


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"originate: {what}={value!r} is not valid (allowed: {pattern.pattern})")
    return value


async def originate(
    settings: AmiSettings,
    number: str,
    *,
    app: str,
    timeout_s: float,
    caller_id: str | None = None,
    channel_id: str | None = None,
) -> str:
    """Call `number` through the trunk; when answered the call enters Stasis app `app`.

    Returns the originated channel's id (also its ARI channel id; the ARI controller's
    `AriCall.channel_id`): `channel_id` if given (so the caller can expect the call before it
    is answered), else a new UUID. Raises `OriginateError` if the call was not answered within
    `timeout_s`, `AmiError` if AMI failed, `ValueError` for a bad number or app name.
    """
    _check(number, _NUMBER, "number")
    try:
        check_asterisk_name(app)
    except ValueError as exc:
        raise ValueError(f"originate: app={app!r}: {exc}") from None
    channel_id = channel_id or str(uuid.uuid4())
    action = {
        "Action": "Originate",
        "Channel": f"PJSIP/{number}@{settings.trunk}",
        "Context": settings.context,
        "Exten": "s",
        "Priority": "1",
        "Async": "true",
        "ChannelId": channel_id,
        "Timeout": str(int(timeout_s * 1000)),
        "Variable": [f"VB_APP={app}", f"VB_NUMBER={number}"],
    }
    if caller_id:
        action["CallerID"] = caller_id
    # OriginateResponse is a "call" class event: a session with events off never sees it.
    manager = await _login(settings, events="call")
    hangup = asyncio.Event()
    cause: list[str] = []

    def on_hangup(_manager: Any, message: Any) -> None:
        if message.get("Uniqueid") == channel_id and not cause:
            cause.append(str(message.get("Cause")))
            hangup.set()

    manager.register_event("Hangup", on_hangup)
    try:
        async with asyncio.timeout(timeout_s + 5):
            # Async originate answers "queued" at once, then OriginateResponse when it ends.
            responses = await manager.send_action(action)
    except TimeoutError:
        manager.close()
        raise OriginateError(f"originate {number}: no OriginateResponse within {timeout_s} s") from None
    except BaseException:
        manager.close()
        raise
    messages = responses if isinstance(responses, list) else [responses]
    first = messages[0] if messages else None
    if first is None or first.get("Response") == "Error":
        reason = first.get("Message") if first is not None else "no response"
        raise AmiError(f"originate {number}: refused by AMI: {reason}")
    final = next((m for m in messages if m.get("Event") == "OriginateResponse"), None)
    if final is None:
        manager.close()
        raise OriginateError(f"originate {number}: no OriginateResponse ({messages})")
    if final.get("Response") != "Success":
        # The channel's Hangup event may trail the response by a moment.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_HANGUP_WAIT_S):
                await hangup.wait()
        manager.close()
        seen = cause[0] if cause else None
        raise OriginateError(
            f"originate {number}: {final.get('Response')}, reason {final.get('Reason')}"
            f" ({_REASONS.get(str(final.get('Reason')), 'unknown')}), hangup cause {seen}",
            reason=str(final.get("Reason")),
            cause=seen,
        )
    manager.close()
    log.info("originated %s -> channel %s (%s)", number, channel_id, final.get("Channel"))
    return channel_id


# How long a failed originate waits for its channel's Hangup event (the cause), s.
_HANGUP_WAIT_S = 1.0

# Asterisk's originate "Reason" codes (enum ast_control_frame_type values it reports).
_REASONS = {
    "0": "no such extension or failure",
    "1": "hung up",
    "3": "rang, not answered before the timeout",
    "4": "answered",
    "5": "busy",
    "8": "congestion",
}


class AmiEventLogger:
    """Logs call events (Hangup with cause, Newchannel, DialEnd, ...) at INFO while connected."""

    def __init__(self, settings: AmiSettings, *, events: Iterable[str] = DEFAULT_EVENTS) -> None:
        self._settings = settings
        self._events = tuple(events)
        self._manager: _Manager | None = None
        self.events_seen = 0

    @property
    def connected(self) -> bool:
        return self._manager is not None and bool(self._manager.authenticated)

    async def start(self) -> None:
        """Connect and log in (raises AmiError if that fails); reconnects by itself later."""
        if self._manager is not None:
            return
        manager = await _login(self._settings, events="call,system,reporting")
        for name in self._events:
            manager.register_event(name, self._on_event)
        self._manager = manager
        log.info("AMI event logger connected to %s:%s", self._settings.host, self._settings.port)

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.close()

    def _on_event(self, manager: Any, msg: Any) -> None:
        # Synchronous: panoramisk would wrap a coroutine in an unowned task.
        self.events_seen += 1
        name = msg.get("Event")
        channel = msg.get("Channel")
        # Our calls' AudioSocket channels and bridges carry the call id: such lines get its trace id.
        named = " ".join(str(msg.get(k) or "") for k in ("Channel", "DestChannel", "BridgeUniqueid"))
        found = _CALL_ID.search(named)
        extra = {"trace_id": found.group(0)} if found else None
        if name == "Hangup":
            log.info(
                "AMI Hangup %s uniqueid=%s cause=%s (%s)",
                channel,
                msg.get("Uniqueid"),
                msg.get("Cause"),
                msg.get("Cause-txt"),
                extra=extra,
            )
        elif name == "DialBegin":
            # The dial string and caller ids are phone numbers (personal data): DEBUG only.
            log.info("AMI DialBegin -> %s", msg.get("DestChannel"), extra=extra)
            log.debug("AMI DialBegin dial string %s", msg.get("DialString"), extra=extra)
        elif name == "DialEnd":
            log.info(
                "AMI DialEnd %s -> %s: %s",
                channel,
                msg.get("DestChannel"),
                msg.get("DialStatus"),
                extra=extra,
            )
        elif name == "Newchannel":
            log.info(
                "AMI Newchannel %s uniqueid=%s exten=%s",
                channel,
                msg.get("Uniqueid"),
                msg.get("Exten"),
                extra=extra,
            )
            log.debug("AMI Newchannel %s caller=%s", channel, msg.get("CallerIDNum"), extra=extra)
        else:
            log.info("AMI %s %s", name, channel or "", extra=extra)
