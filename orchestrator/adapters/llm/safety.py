"""The safety gate on LLM output: local deny rules, the OpenAI moderation endpoint, or both.

The Orchestrator reads the first chunk of an answer (its first sentence) and speaks nothing
unless it passed. Checks fail closed: when the moderation service cannot answer, the text is
treated as unsafe, so the caller hears the scripted non-secure response instead of an unchecked
answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import openai

from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.domain.errors import ConfigError

# Deliberately modest Russian defaults: insults, politics, medical advice. Replace them per bot.
DEFAULT_DENY_PATTERNS: tuple[str, ...] = (
    r"\b(дурак|дура|идиот\w*|тупиц\w*|кретин\w*|придур\w*)\b",
    r"\b(политик\w*|президент\w*|выбор(ы|ах|ов)|партии|оппозици\w*|митинг\w*)\b",
    r"\b(диагноз\w*|дозировк\w*|принимайте|антибиотик\w*|рецепт на)\b",
)


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    """Whether a text may be spoken, and why not."""

    safe: bool
    reason: str | None = None


class SafetyCheck(Protocol):
    """Judges a piece of LLM output before it is spoken."""

    async def check(self, text: str) -> SafetyVerdict:
        """The verdict on `text`."""
        ...


class LocalRulesSafety:
    """Unsafe when any deny regex matches (case-insensitive)."""

    def __init__(self, deny_patterns: Iterable[str] = DEFAULT_DENY_PATTERNS) -> None:
        self._rules: list[re.Pattern[str]] = []
        for i, pattern in enumerate(deny_patterns):
            try:
                self._rules.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(f"safety deny_patterns[{i}] {pattern!r}: {exc}") from exc

    async def check(self, text: str) -> SafetyVerdict:
        """Unsafe with the matching rule as the reason."""
        for rx in self._rules:
            m = rx.search(text)
            if m:
                return SafetyVerdict(False, f"deny rule {rx.pattern!r} matched {m.group(0)!r}")
        return SafetyVerdict(True)


class ModerationSafety:
    """The OpenAI moderation endpoint: unsafe when flagged, or when it cannot answer in time."""

    def __init__(self, client: openai.AsyncOpenAI, settings: OpenAISettings) -> None:
        """`settings`: `moderation_model` and `moderation_timeout_s` (one check, s)."""
        self._client = client
        self._model = settings.moderation_model
        self._timeout = settings.moderation_timeout_s

    async def check(self, text: str) -> SafetyVerdict:
        """Flagged categories as the reason; fails closed on errors and timeouts."""
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._client.moderations.create(model=self._model, input=text)
        except TimeoutError:
            return SafetyVerdict(False, f"moderation did not answer within {self._timeout}s")
        except openai.OpenAIError as exc:
            return SafetyVerdict(False, f"moderation failed: {type(exc).__name__}: {exc}")
        if not resp.results:
            return SafetyVerdict(False, "moderation returned no result")
        result = resp.results[0]
        if not result.flagged:
            return SafetyVerdict(True)
        flagged = [k for k, v in result.categories.model_dump().items() if v]
        return SafetyVerdict(False, "moderation flagged: " + (", ".join(flagged) or "unspecified"))


class CombinedSafety:
    """All checks in order (put the cheap local one first); the first unsafe verdict wins."""

    def __init__(self, checks: Sequence[SafetyCheck]) -> None:
        if not checks:
            raise ConfigError("CombinedSafety needs at least one check")
        self._checks = list(checks)

    async def check(self, text: str) -> SafetyVerdict:
        """Safe only when every check says so."""
        for c in self._checks:
            verdict = await c.check(text)
            if not verdict.safe:
                return verdict
        return SafetyVerdict(True)
