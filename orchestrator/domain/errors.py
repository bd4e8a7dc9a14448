"""One exception family for provider failures, plus configuration errors.

Every provider adapter raises a subclass of `ProviderError`; `retryable` tells the caller whether
the same request may succeed if tried again (a timeout or a dropped connection) or not (bad
credentials, a malformed request).
"""

from __future__ import annotations


class VoicebridgeError(Exception):
    """Base of every error this project raises on purpose."""


class ProviderError(VoicebridgeError):
    """An external service (STT, TTS, LLM, cache, embeddings) failed."""

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.provider}: {base}" if self.provider else base


class STTError(ProviderError):
    """Speech recognition failed."""


class TTSError(ProviderError):
    """Speech synthesis failed."""


class TTSConnectionError(TTSError):
    """The TTS service could not be reached or the stream could not be opened."""


class LLMError(ProviderError):
    """The language model failed or timed out."""


class CacheError(ProviderError):
    """The audio cache failed."""


class ClassifierError(ProviderError):
    """Intent classification or FAQ lookup failed (e.g. the embeddings service)."""


class ConfigError(VoicebridgeError):
    """A setting or file is invalid; the message names what and where."""


class DialogueMapError(ConfigError):
    """A dialogue map is invalid: names the file, the JSON path and the problem."""

    def __init__(self, file: str, json_path: str, problem: str) -> None:
        super().__init__(f"{file}: {json_path}: {problem}")
        self.file = file
        self.json_path = json_path
        self.problem = problem


class AudioClosed(VoicebridgeError, ConnectionError):
    """The call's audio is gone (the caller hung up): `OutboundAudio.write()`/`drain()` raise it."""


class CallSetupError(VoicebridgeError):
    """A call's Orchestrator could not be set up (e.g. the TTS connection failed)."""
