"""What the SpeechKit v3 adapters share: settings, auth metadata, the channel, gRPC error mapping.

Auth (protocols.md section 5): ("authorization", "Api-Key <key>") or ("authorization",
"Bearer <IAM token>"), plus ("x-folder-id", folder) unless a service account is used. gRPC
Python wants the metadata keys lowercase.
"""

from __future__ import annotations

from typing import Annotated

import grpc
import pydantic.dataclasses
from pydantic import ConfigDict, Field

from orchestrator.domain.errors import ConfigError, ProviderError

STT_ENDPOINT = "stt.api.cloud.yandex.net:443"
TTS_ENDPOINT = "tts.api.cloud.yandex.net:443"
IAM_ENDPOINT = "iam.api.cloud.yandex.net:443"

_Positive = Annotated[float, Field(gt=0)]
_NonNegative = Annotated[float, Field(ge=0)]

# Codes after which the same request may succeed: the service is busy, restarting or slow.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


@pydantic.dataclasses.dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class YandexSettings:
    """SpeechKit connection, auth, recognition and voice settings (section `[yandex]`).

    One object for the STT and TTS adapters and the IAM token provider. Auth: `api_key`, or a
    service account's authorized key (`service_account_key_file`, `yc iam key create` JSON: IAM
    tokens fetched and refreshed), or a static `iam_token` (expires within 12 h). Invalid values
    raise `pydantic.ValidationError` (a `ValueError`) naming the field. Times in seconds.
    """

    # --- connection and auth
    api_key: str | None = None
    iam_token: str | None = None  # static: expires within 12 h, prefer the key file below
    service_account_key_file: str | None = None
    folder_id: str | None = None
    stt_endpoint: str = STT_ENDPOINT
    tts_endpoint: str = TTS_ENDPOINT
    iam_endpoint: str = IAM_ENDPOINT
    tls: bool = True  # False only for the local stand-ins
    connect_timeout_s: _Positive = 5.0
    # --- IAM tokens from the service-account key (live 12 h at most)
    iam_refresh_every_s: _Positive = 3600.0
    iam_timeout_s: _Positive = 10.0  # one token request
    iam_retry_backoff_s: _Positive = 1.0  # a failed refresh is retried after this, doubled ...
    iam_retry_backoff_max_s: _Positive = 60.0  # ... up to this
    # --- STT
    stt_model: str = "general"
    language: str = "ru-RU"
    chunk_ms: Annotated[int, Field(ge=20, le=1000)] = 100  # 20 ms frames are batched into chunks this long
    renew_after_s: _Positive = 280.0  # the service cuts a stream at 5 min of audio
    renew_after_bytes: Annotated[int, Field(ge=1)] = 9_000_000  # ... or at 10 MB
    renew_grace_s: _NonNegative = 10.0  # renewal waits this long at most for a pause in speech
    # A pause: this much audio below renew_quiet_rms with no partial pending.
    renew_quiet_ms: Annotated[int, Field(ge=0)] = 300
    renew_quiet_rms: Annotated[int, Field(ge=0, le=32767)] = 300
    keepalive_s: _Positive = 1.0  # with no audio for this long, a silence_chunk goes (idle cut-off is 5 s)
    final_refinement_wait_s: _NonNegative = 0.3  # how long a final waits for its normalized text
    drain_timeout_s: _Positive = 10.0  # a half-closed stream must finish within this
    # The one inbound buffer (audio kept while the stream is down; older audio is dropped), and the
    # cap on what a failed stream sent that no final covers (resent on the next stream).
    max_buffered_s: _Positive = 30.0
    reconnect_attempts: Annotated[int, Field(ge=0)] = 5
    reconnect_backoff_s: _NonNegative = 0.2  # doubled per consecutive failure ...
    reconnect_backoff_max_s: _NonNegative = 3.0  # ... up to this
    # --- TTS
    tts_model: str = ""
    voice: str = "marina"
    role: str | None = None
    speed: Annotated[float, Field(ge=0.1, le=3.0)] = 1.0
    synthesis_timeout_s: _Positive = 15.0  # one UtteranceSynthesis (<= 250 chars), request to last chunk
    chunk_timeout_s: _Positive = 10.0  # longest gap between streamed TTS responses

    def metadata(
        self, request_id: str | None = None, *, iam_token: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata: authorization, folder and (optionally) the client request id.

        `iam_token` (the refreshing provider's current token) wins over the static `iam_token`;
        an `api_key` wins over both. ConfigError when there is no credential at all over TLS.
        """
        md: list[tuple[str, str]] = []
        token = iam_token or self.iam_token
        if self.api_key:
            md.append(("authorization", f"Api-Key {self.api_key}"))
        elif token:
            md.append(("authorization", f"Bearer {token}"))
        elif self.tls:
            # The stand-ins (insecure) accept anonymous calls; the real service never does.
            raise ConfigError("YandexSettings: set api_key or iam_token to reach SpeechKit")
        if self.folder_id:
            md.append(("x-folder-id", self.folder_id))
        if request_id:
            # Yandex logs it with the request, for support; the stand-in picks a script by it.
            md.append(("x-client-request-id", request_id))
        return tuple(md)


def speechkit_channel(endpoint: str, *, tls: bool) -> grpc.aio.Channel:
    """A gRPC channel to SpeechKit: TLS for Yandex, plaintext for the local stand-in."""
    options = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        # Reconnect within about a second of SpeechKit coming back (gRPC's default backoff grows
        # to 120 s, so a call after an outage waited seconds for a service already back).
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if tls:
        return grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(endpoint, options=options)


def is_retryable(err: grpc.aio.AioRpcError) -> bool:
    """Whether a failed call may succeed if made again (a reset stream counts).

    INTERNAL counts too: when the server ends a stream while we are sending, gRPC Python replaces
    the server's status with INTERNAL "Internal error from Core" (`set_internal_error` in
    grpc/aio/_call.py), and a reset HTTP/2 stream (RST_STREAM) also surfaces as INTERNAL.
    """
    return err.code() in RETRYABLE_CODES or err.code() == grpc.StatusCode.INTERNAL


def map_rpc_error(
    err: grpc.aio.AioRpcError, cls: type[ProviderError], what: str, provider: str
) -> ProviderError:
    """Turn a gRPC failure into our error type, with the code and the service's message."""
    code = err.code()
    name = code.name if code is not None else "UNKNOWN"
    return cls(f"{what}: {name}: {err.details()}", provider=provider, retryable=is_retryable(err))
