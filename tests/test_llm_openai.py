"""OpenAICompatLLMManager against the OpenAI stand-in over real HTTP (SSE)."""

from __future__ import annotations

import asyncio
import dataclasses

import openai
import pytest

from orchestrator.adapters.llm.openai_compat import STRICTER_INSTRUCTION, OpenAICompatLLMManager
from orchestrator.adapters.llm.safety import LocalRulesSafety
from orchestrator.adapters.openai_settings import OpenAISettings
from orchestrator.contracts import AnswerStream, LLMManager
from orchestrator.dialogue_map.models import LLMSettings
from orchestrator.domain.errors import LLMError
from orchestrator.domain.models import LLMStreamChunk, SessionState, TranscriptEntry
from testkit.standins.openai_server import OpenAIStandin

ANSWER = "Доставка стоит триста рублей. Привезём завтра до обеда. Что-нибудь ещё?"


def manager(client: openai.AsyncOpenAI, **kw: float) -> OpenAICompatLLMManager:
    """`kw`: `[openai]` settings (timeouts, first_chunk_chars) over the defaults."""
    settings = dataclasses.replace(OpenAISettings(model="test-model"), **kw)
    llm = LLMSettings(system_prompt="Ты вежливый оператор службы доставки.")
    return OpenAICompatLLMManager(client, settings, llm, safety=LocalRulesSafety())


@pytest.fixture(autouse=True)
def _script(openai_standin: OpenAIStandin) -> None:
    openai_standin.script.add("(?i)доставк", ANSWER)


async def test_streams_first_sentence_first_with_verdicts(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    session = SessionState(
        call_id="c1",
        transcript=[
            TranscriptEntry("bot", "Здравствуйте!"),
            TranscriptEntry("user", "Сколько стоит доставка?"),
        ],
    )
    llm = manager(openai_client)
    chunks = [c async for c in llm.process_user_turn("Сколько стоит доставка?", session)]
    assert [c.text_chunk for c in chunks] == [
        "Доставка стоит триста рублей. ",
        "Привезём завтра до обеда. ",
        "Что-нибудь ещё? ",
    ]
    assert all(c.is_safe and c.model == "test-model" for c in chunks)
    assert [c.is_final for c in chunks] == [False, False, True]
    assert chunks[-1].finish_reason == "stop"
    assert llm.model_name == "test-model"
    # What the server got: system prompt, history (user turn not duplicated), the user text.
    path, body = openai_standin.requests[-1]
    assert path == "/v1/chat/completions" and body["stream"] is True
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Ты вежливый оператор службы доставки."),
        ("assistant", "Здравствуйте!"),
        ("user", "Сколько стоит доставка?"),
    ]
    assert body["max_tokens"] == 200 and body["model"] == "test-model"


async def test_retry_attempt_adds_the_stricter_instruction(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    llm = manager(openai_client)
    _ = [c async for c in llm.process_user_turn("доставка?", SessionState("c"), attempt=1)]
    msgs = openai_standin.requests[-1][1]["messages"]
    assert {"role": "system", "content": STRICTER_INSTRUCTION} in msgs


async def test_first_chunk_without_sentence_end_is_cut_by_length(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    openai_standin.script.rules.clear()
    openai_standin.script.default = "раз два три четыре пять шесть семь восемь девять десять"
    llm = manager(openai_client, first_chunk_chars=20)
    chunks = [c async for c in llm.process_user_turn("считай", SessionState("c"))]
    assert chunks[0].text_chunk == "раз два три четыре "
    assert "".join(c.text_chunk for c in chunks).split() == openai_standin.script.default.split()


async def test_unsafe_first_chunk_is_flagged_and_abort_closes_the_connection(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    openai_standin.token_s = 0.02  # a long answer is still streaming when we abort
    openai_standin.inject("unsafe_first")
    llm = manager(openai_client)
    gen = llm.process_user_turn("Сколько стоит доставка?", SessionState("c"))
    first: LLMStreamChunk = await anext(aiter(gen))
    assert not first.is_safe and first.safety_reason and "идиот" in first.safety_reason
    await llm.abort_generation()
    async with asyncio.timeout(5):
        await openai_standin.disconnected.wait()  # the server saw the stream closed
    assert openai_standin.client_disconnects == 1
    assert [c async for c in gen] == []  # the generator ends quietly after an abort
    await llm.abort_generation()  # idempotent
    await llm.shutdown()


async def test_closing_the_answer_stream_closes_the_connection(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    openai_standin.token_s = 0.02  # a long answer is still streaming when we close it
    llm: LLMManager = manager(openai_client)
    answer: AnswerStream = llm.process_user_turn("Сколько стоит доставка?", SessionState("c"))
    it = aiter(answer)
    first = await anext(it)
    assert first.is_safe and first.text_chunk == "Доставка стоит триста рублей. "
    await answer.aclose()  # barge-in: the consumer drops the answer
    async with asyncio.timeout(5):
        await openai_standin.disconnected.wait()  # the server saw the stream closed
    assert openai_standin.client_disconnects == 1
    assert [c async for c in it] == []
    await answer.aclose()  # idempotent
    await llm.shutdown()


@pytest.mark.parametrize(
    ("fault", "match"),
    [("http500", "HTTP 500"), ("stall", "within 0.3s"), ("drop", "stream")],
)
async def test_failures_are_retryable_llm_errors(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI, fault: str, match: str
) -> None:
    openai_standin.inject(fault)  # type: ignore[arg-type]
    llm = manager(openai_client, first_token_timeout_s=0.3)
    got: list[LLMStreamChunk] = []
    with pytest.raises(LLMError, match=match) as exc:
        async for c in llm.process_user_turn("Сколько стоит доставка?", SessionState("c")):
            got.append(c)
    assert exc.value.retryable
    if fault == "drop":
        assert got and got[0].text_chunk == "Доставка стоит триста рублей. "


async def test_total_timeout(openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI) -> None:
    openai_standin.token_s = 0.2
    llm = manager(openai_client, timeout_s=0.5)
    with pytest.raises(LLMError, match="whole answer not within 0.5s") as exc:
        _ = [c async for c in llm.process_user_turn("доставка", SessionState("c"))]
    assert exc.value.retryable


async def test_bad_request_is_not_retryable(openai_client: openai.AsyncOpenAI) -> None:
    client = openai_client.with_options(base_url=openai_client.base_url.join("/nowhere/"))
    llm = manager(client)
    with pytest.raises(LLMError, match="HTTP 404") as exc:
        _ = [c async for c in llm.process_user_turn("доставка", SessionState("c"))]
    assert not exc.value.retryable


async def test_every_sentence_carries_its_own_verdict(
    openai_standin: OpenAIStandin, openai_client: openai.AsyncOpenAI
) -> None:
    openai_standin.script.rules.clear()
    openai_standin.script.default = "Доставка завтра. Голосуйте на выборах за нас. Всего доброго."
    llm = manager(openai_client)
    chunks = [c async for c in llm.process_user_turn("когда?", SessionState("c"))]
    assert [c.is_safe for c in chunks] == [True, False, True]
    assert chunks[1].safety_reason and "выборах" in chunks[1].safety_reason
