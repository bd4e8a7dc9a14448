"""What the SpeechKit v3 adapters share: settings, auth metadata, the channel, gRPC error mapping.

Auth (protocols.md section 5): ("authorization", "Api-Key <key>") or ("authorization",
"Bearer <IAM token>"), plus ("x-folder-id", folder) unless a service account is used. gRPC
Python wants the metadata keys lowercase.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from orchestrator.domain.errors import ConfigError, ProviderError

STT_ENDPOINT = "stt.api.cloud.yandex.net:443"
TTS_ENDPOINT = "tts.api.cloud.yandex.net:443"

# Codes after which the same request may succeed: the service is busy, restarting or slow.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True, slots=True)
class YandexSettings:
    """SpeechKit connection and voice settings (shared by STT and TTS)."""

    api_key: str | None = None
    iam_token: str | None = None
    folder_id: str | None = None
    stt_endpoint: str = STT_ENDPOINT
    tts_endpoint: str = TTS_ENDPOINT
    tls: bool = True
    # STT
    stt_model: str = "general"
    language: str = "ru-RU"
    chunk_ms: int = 100  # 20 ms frames are batched into chunks this long
    renew_after_s: float = 280.0  # the service cuts a stream at 5 min of audio
    renew_after_bytes: int = 9_000_000  # ... or at 10 MB
    renew_grace_s: float = 10.0  # renewal waits this long at most for a pause in speech
    renew_quiet_ms: int = 300  # a pause: this much audio below renew_quiet_rms, no partial pending
    renew_quiet_rms: int = 300
    keepalive_s: float = 1.0  # with no audio for this long, a silence_chunk goes (idle cut-off is 5 s)
    final_refinement_wait_s: float = 0.3  # how long a final waits for its normalized text
    drain_timeout_s: float = 10.0  # a half-closed stream must finish within this
    max_buffered_s: float = 30.0  # audio kept while the stream is down; older audio is dropped
    reconnect_attempts: int = 5
    reconnect_backoff_s: float = 0.2  # doubled per consecutive failure ...
    reconnect_backoff_max_s: float = 3.0  # ... up to this
    # TTS
    tts_model: str = ""
    voice: str = "marina"
    role: str | None = None
    speed: float = 1.0
    # Timeouts
    connect_timeout_s: float = 5.0
    synthesis_timeout_s: float = 15.0  # one UtteranceSynthesis, first chunk to last
    chunk_timeout_s: float = 10.0  # longest gap between streamed TTS responses

    def metadata(self, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata: authorization, folder and (optionally) the client request id."""
        md: list[tuple[str, str]] = []
        if self.api_key:
            md.append(("authorization", f"Api-Key {self.api_key}"))
        elif self.iam_token:
            md.append(("authorization", f"Bearer {self.iam_token}"))
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
