"""`--standins`: run the local SpeechKit and OpenAI stand-ins in-process and point settings at them.

For the demo, the end-to-end tests and trying a map without keys or internet. The stand-ins are
test and demo infrastructure (testkit/standins/), not the product: the SpeechKit stand-in
"recognises" the next line of a script for each stretch of speech it hears, whatever was said.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence

from bridge.settings import Settings
from testkit.standins.openai_server import OpenAIStandin
from testkit.standins.script import LlmScript, SttScript
from testkit.standins.speechkit_server import SpeechKitStandin

log = logging.getLogger(__name__)

# What the demo caller says, in order (the SpeechKit stand-in's default script).
DEMO_CALLER_LINES: tuple[str, ...] = (
    "у нас квартира шестьдесят метров",
    "а вы работаете по воскресеньям",
    "нет спасибо",
)
DEMO_LLM_ANSWERS: tuple[tuple[str, str], ...] = (
    ("воскресень|выходн", "Да, мы работаем без выходных, с восьми утра до десяти вечера."),
)


@contextlib.asynccontextmanager
async def running_standins(
    settings: Settings,
    *,
    caller_lines: Sequence[str] = DEMO_CALLER_LINES,
    llm_answers: Sequence[tuple[str, str]] = DEMO_LLM_ANSWERS,
) -> AsyncIterator[tuple[Settings, SpeechKitStandin, OpenAIStandin]]:
    """Start both stand-ins on 127.0.0.1 and yield settings that use them (TTS over gRPC too)."""
    llm_script = LlmScript()
    for pattern, answer in llm_answers:
        llm_script.add(pattern, answer)
    speechkit = SpeechKitStandin(SttScript(default=list(caller_lines)))
    openai_standin = OpenAIStandin(llm_script)
    await speechkit.start()
    try:
        await openai_standin.start()
        try:
            log.warning(
                "using the local SpeechKit (%s) and OpenAI (%s) stand-ins: test/demo only, not Yandex or OpenAI",
                speechkit.endpoint,
                openai_standin.base_url,
            )
            patched = settings.model_copy(
                update={
                    "providers": settings.providers.model_copy(update={"tts": "yandex", "llm": "openai"}),
                    "yandex": dataclasses.replace(
                        settings.yandex,
                        stt_endpoint=speechkit.endpoint,
                        tts_endpoint=speechkit.endpoint,
                        tls=False,
                    ),
                    "openai": dataclasses.replace(
                        settings.openai, base_url=openai_standin.base_url, api_key="standin"
                    ),
                }
            )
            yield patched, speechkit, openai_standin
        finally:
            await openai_standin.close()
    finally:
        await speechkit.close()
