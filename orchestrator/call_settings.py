"""Settings of one call's dialogue that are the service's, not the dialogue map's."""

from __future__ import annotations

from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field

__all__ = ["CallSettings"]

_Positive = Annotated[float, Field(gt=0)]


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class CallSettings:
    """Bounds on one call (section `[call]`), in seconds.

    The dialogue's own timing (no-input timeout, operation timeout, thresholds) is in the map's
    `settings`; these are the service's bounds on the providers.
    """

    # The call's async setup (connecting its TTS stream): past this the caller hears the
    # emergency phrase and is hung up (`CallSetupError`).
    setup_timeout_s: _Positive = 5.0
    # Bound on one provider operation inside the call (opening the STT stream, an LLM abort, a
    # TTS flush, a cache read).
    provider_timeout_s: _Positive = 5.0
    # Bound on playing the emergency phrase before hanging up a call that cannot be served.
    apologise_timeout_s: _Positive = 10.0
