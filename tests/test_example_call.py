"""A whole example call in text mode through the real Orchestrator, FlowEngine and classifier.

Scripted caller utterances in; bot playlists, state transitions, metrics and the hang-up out.
Runs on virtual time, so the pacing, fillers and playlists are the real ones without waiting.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.dialogue_map.loader import load_dialogue_map
from orchestrator.orchestrator import CallEvent
from testkit.fakes import RecordingSink
from testkit.textmode import run_text_call
from testkit.virtual_time import run_virtual

MAP = Path(__file__).resolve().parent.parent / "dialogue_maps" / "cleaning_quote.ru.json"


def run(
    utterances: list[str],
) -> tuple[list[CallEvent], list[dict[str, object]], list[str], str, RecordingSink]:
    dmap = load_dialogue_map(MAP)
    script = iter(utterances)
    sink = RecordingSink()

    async def next_utterance() -> str | None:
        return next(script, None)

    async def main() -> tuple[list[CallEvent], list[dict[str, object]], list[str], str]:
        call = await run_text_call(dmap, next_utterance, sink=sink)
        return call.events, call.metrics, call.said, call.outcome.reason

    events, metrics, said, reason = run_virtual(main)
    return events, metrics, said, reason, sink


def test_price_quote_call_from_greeting_to_booking() -> None:
    events, metrics, said, reason, sink = run(
        [
            "здравствуйте, у меня квартира сорок пять квадратных метров",
            "ой, это как-то дорого",
            "а вы по воскресеньям работаете со своей химией?",
            "хорошо, давайте запишемся",
            "лучше в пятницу",
        ]
    )
    transitions = [(e.data["from_state"], e.data["to_state"]) for e in events if e.kind == "state"]
    assert transitions == [("greeting", "quote"), ("quote", "ask_day"), ("ask_day", "booked")]
    turns = [m for m in metrics if m["event"] == "turn"]
    assert [t["route"] for t in turns] == ["greeting", "scripted", "faq", "llm", "scripted", "scripted"]
    assert turns[1]["intent"] == "give_area"
    assert turns[2]["faq"] == "too_expensive"
    # The price is computed by the map and spoken through the tts template.
    assert any("6750" in s or "6 750" in s for s in said), said
    assert any("пятниц" in s for s in said), said
    plays = [e.data.get("key") for e in events if e.kind == "play" and e.data.get("key")]
    assert plays[0] == "static:greeting"
    assert plays[-1] == "static:goodbye_booked"  # the goodbye played to its end ...
    assert reason == "end_call"  # ... and then the call ended
    final = metrics[-1]
    assert final["event"] == "call_end" and final["final_state"] == "booked"
    assert sink.frames, "the paced playout ran"


def test_refusal_ends_the_call_politely() -> None:
    events, metrics, _, reason, _ = run(["нет, спасибо, не интересно"])
    transitions = [(e.data["from_state"], e.data["to_state"]) for e in events if e.kind == "state"]
    assert transitions == [("greeting", "goodbye_refusal")]
    assert reason == "end_call"


def test_missing_area_asks_again_then_quotes() -> None:
    events, metrics, said, reason, _ = run(["сколько стоит уборка квартиры", "метров шестьдесят", "нет"])
    turns = [m for m in metrics if m["event"] == "turn"]
    routes = [t["route"] for t in turns]
    assert routes[1] in ("clarify", "faq", "llm")  # a question without the area never quotes a price
    assert any("9000" in s or "9 000" in s for s in said), said
    assert reason == "end_call"
