"""AudioSocket server settings (`[audiosocket]`) and the constants their defaults come from."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["PENDING_LIMIT", "SWEEP_S", "AudioSocketSettings"]

PENDING_LIMIT = 50  # default of AudioSocketSettings.pending_limit: 1 s of 20 ms frames
SWEEP_S = 0.25  # the rate-cap window and the media watchdog's resolution, s


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class AudioSocketSettings:
    """The AudioSocket TCP server (section `[audiosocket]`).

    Where Asterisk connects to is `AriSettings.audiosocket_host` (the address as Asterisk sees us).
    """

    bind_host: str = "127.0.0.1"
    bind_port: Annotated[int, Field(ge=0, le=65535)] = 9092  # 0: any free port (tests)
    # A connection that has not sent its UUID within this many seconds is closed.
    uuid_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # Inbound messages held for a call whose gateway is not attached yet; the oldest are dropped.
    pending_limit: Annotated[int, Field(ge=1)] = PENDING_LIMIT
    # Bound on waiting for the TCP teardown when the bridge hangs a leg up, s.
    close_wait_s: Annotated[float, Field(gt=0)] = 1.0
    # A leg that has sent its UUID and then nothing for this long is ended (`media_timeout`), s.
    # Asterisk sends a frame every 20 ms while the call's media flows.
    media_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # Inbound bytes per second one connection may send (headers included); beyond it the
    # connection is not read until the next sweep. 8 kHz slin at 20 ms is 16,150 B/s: the default
    # allows 4x that in bursts; raise it for wideband formats (16 kHz is twice as much).
    max_inbound_bytes_per_s: Annotated[int, Field(ge=1)] = 64_000
    # Open AudioSocket connections (with or without a UUID yet), in all and from one peer address.
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_connections_per_peer: Annotated[int, Field(ge=1)] = 600
    # New connections accepted per second (token bucket with one second of burst).
    max_accepts_per_s: Annotated[float, Field(gt=0)] = 100.0
    # Descriptors kept free for everything else (live calls' provider and cache sockets, files):
    # new connections are refused once fewer than this many remain under the open-file limit.
    # Half of it (at most 100) is also the listen backlog, the most accepted in one go.
    fd_headroom: Annotated[int, Field(ge=1)] = 100
    # TCP keepalive: first probe after this many idle seconds, then every interval, dead after count.
    keepalive_idle_s: Annotated[int, Field(ge=1)] = 10
    keepalive_interval_s: Annotated[int, Field(ge=1)] = 5
    keepalive_count: Annotated[int, Field(ge=1)] = 3
