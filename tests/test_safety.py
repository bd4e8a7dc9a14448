"""The safety gate: local deny rules, the moderation endpoint (stand-in over HTTP), combined."""

from __future__ import annotations

import openai
import pytest

from orchestrator.adapters.llm.safety import (
    CombinedSafety,
    LocalRulesSafety,
    ModerationSafety,
    SafetyVerdict,
)
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.domain.errors import ConfigError
from testkit.standins.openai_server import OpenAIStandin


@pytest.mark.parametrize(
    "text",
    [
        "Ну вы и ИДИОТ, честное слово.",
        "Лучше голосуйте на выборах за нашу партию.",  # "выборах"
        "Принимайте антибиотики два раза в день.",
    ],
)
async def test_default_rules_flag_insults_politics_and_medical_advice(text: str) -> None:
    verdict = await LocalRulesSafety().check(text)
    assert not verdict.safe and verdict.reason and "deny rule" in verdict.reason


@pytest.mark.parametrize(
    "text", ["Доставка стоит триста рублей.", "Мы работаем до десяти вечера.", "Выбор за вами."]
)
async def test_default_rules_pass_ordinary_answers(text: str) -> None:
    assert await LocalRulesSafety().check(text) == SafetyVerdict(True)


async def test_rules_are_configurable_and_checked() -> None:
    rules = LocalRulesSafety([r"\bскидк\w*"])
    assert not (await rules.check("Дадим скидку!")).safe
    assert (await rules.check("Ну вы и идиот")).safe  # defaults replaced
    with pytest.raises(ConfigError, match=r"deny_patterns\[1\]"):
        LocalRulesSafety(["ok", "(unclosed"])


async def test_moderation_flags_and_fails_closed(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    mod = ModerationSafety(openai_client, OpenAISettings())
    flagged = await mod.check("Вы идиот")
    assert not flagged.safe and flagged.reason == "moderation flagged: harassment"
    assert (await mod.check("Доставка завтра")).safe
    assert openai_standin.requests[-1][1]["model"] == "omni-moderation-latest"
    down = openai.AsyncOpenAI(base_url="http://127.0.0.1:1/v1", api_key="x", max_retries=0)
    verdict = await ModerationSafety(down, OpenAISettings()).check("Доставка завтра")
    assert not verdict.safe and verdict.reason and "moderation failed" in verdict.reason
    await down.close()


async def test_combined_first_unsafe_wins(openai_client: openai.AsyncOpenAI) -> None:
    combined = CombinedSafety(
        [LocalRulesSafety([r"скидк"]), ModerationSafety(openai_client, OpenAISettings())]
    )
    assert "deny rule" in ((await combined.check("скидка")).reason or "")
    assert "moderation" in ((await combined.check("идиот")).reason or "")
    assert (await combined.check("привет")).safe
    with pytest.raises(ConfigError):
        CombinedSafety([])
