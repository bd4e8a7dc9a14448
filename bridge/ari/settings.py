"""`AriSettings`: where ARI is and how the controller talks to it (the `[ari]` settings section)."""

from __future__ import annotations

import os
from typing import Annotated

import pydantic.dataclasses
from pydantic import ConfigDict, Field, field_validator

from bridge.asterisk_names import AsteriskName
from orchestrator.domain.addresses import HttpUrl

__all__ = ["AriSettings"]


@pydantic.dataclasses.dataclass(
    frozen=True, slots=True, config=ConfigDict(extra="forbid", allow_inf_nan=False)
)
class AriSettings:
    """Where ARI is and how the controller talks to it (section `[ari]`).

    `username`, `password` and `app` follow `bridge.asterisk_names` (the one rule, shared with AMI).
    Invalid values raise `pydantic.ValidationError` (a `ValueError`) naming the field.
    """

    # Base URL of Asterisk's HTTP server: http://host:8088/ (http.conf `bindport`) or, with
    # `tlsenable=yes` there, https://host:8089/ (`tlsbindaddr`); the events websocket follows it
    # (ws:// or wss://).
    url: HttpUrl = "http://127.0.0.1:8088/"
    username: AsteriskName = "voicebridge"
    password: AsteriskName = "voicebridge"
    app: AsteriskName = "voicebridge"
    # host:port where Asterisk connects for AudioSocket (our `[audiosocket]` bind, as Asterisk sees it).
    audiosocket_host: str = "127.0.0.1:9092"
    # Bound on every ARI request and every call-setup wait, s.
    timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Reconnect backoff after the websocket closed: starts here, doubles per failure ...
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    # ... up to this, s. Short: while the app is not registered Asterisk refuses every new call
    # (Stasis app does not exist), so after an Asterisk restart each second of backoff is lost calls.
    reconnect_max_s: Annotated[float, Field(gt=0)] = 2.0
    # After the caller hung up, how long the call handler gets to notice EOF and return before
    # it is cancelled, s (it should return within a frame or two).
    handler_grace_s: Annotated[float, Field(gt=0)] = 5.0
    # TLS (https URLs only): PEM file of the CA(s) that signed Asterisk's certificate; None uses
    # the system's trust store.
    ca_file: str | None = None
    # Check Asterisk's certificate and host name. Turning it off is for a lab only: it is logged
    # at WARNING on every start.
    verify_tls: bool = True

    @field_validator("ca_file")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"{value}: no such readable file (the CA certificate(s) for ARI's TLS)")
        return value

    @field_validator("audiosocket_host")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port (the address Asterisk connects to for AudioSocket)")
        return value
