"""Which event loop `voicebridge serve` runs on (section `[service]`).

uvloop (libuv) does the same socket reads and writes with less interpreter work per callback;
it is optional (`pip install voicebridge[uvloop]`), the standard asyncio loop is the default.
The bench's capacity table measures both (`python -m bench --loop uvloop`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import pydantic.dataclasses
from pydantic import ConfigDict

from orchestrator.domain.errors import ConfigError

__all__ = ["EventLoopKind", "ServiceSettings", "loop_factory"]

EventLoopKind = Literal["asyncio", "uvloop"]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class ServiceSettings:
    """Process-wide settings (section `[service]`)."""

    event_loop: EventLoopKind = "asyncio"


def loop_factory(kind: EventLoopKind) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of `kind`, for `asyncio.Runner(loop_factory=...)`.

    Raises ConfigError naming `[service] event_loop` when uvloop is asked for but not installed.
    """
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        raise ConfigError(
            '[service] event_loop = "uvloop" but uvloop is not installed '
            "(pip install 'voicebridge[uvloop]', or set it to \"asyncio\")"
        ) from exc
    return uvloop.new_event_loop
