"""Loading dialogue maps: every error names the file, the JSON path and the problem."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dialogue_map.loader import json_path, load_dialogue_map, parse_dialogue_map
from orchestrator.dialogue_map.models import DialogueMap
from orchestrator.dialogue_map.schema import SCHEMA_PATH, export_schema, schema_text
from orchestrator.domain.errors import DialogueMapError

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
EXAMPLE = MAPS / "cleaning_quote.ru.json"


def example_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    return data


def broken(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the example map with `mutate` applied, written to tmp_path."""
    data = copy.deepcopy(example_data())
    mutate(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def load_error(path: Path) -> DialogueMapError:
    with pytest.raises(DialogueMapError) as info:
        load_dialogue_map(path)
    err = info.value
    assert err.file == str(path)
    assert str(err).startswith(f"{path}: {err.json_path}: ")
    return err


def test_example_loads() -> None:
    m = load_dialogue_map(EXAMPLE)
    assert m.initial_state == "greeting"
    assert m.json_schema_ref == "./schema.json"
    assert m.state("quote").set_variables["final_price"]
    assert m.settings.intent_threshold == 0.45
    assert m.audio["static:greeting"].startswith("Здравствуйте")


def test_json_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "x",\n  "states": {,}\n}\n', encoding="utf-8")
    err = load_error(path)
    assert err.json_path == "$"
    assert "line 3, column 14" in err.problem


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"name": "a", "name": "b"}', encoding="utf-8")
    err = load_error(path)
    assert "duplicate key 'name'" in err.problem


def test_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.json")
    assert "cannot read" in err.problem


def _set_item(state: str, index: int, item: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d["states"][state]["system_response"]["playlist"][index] = item

    return mutate


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (
            _set_item("quote", 2, {"type": "video", "key": "static:x"}),
            "$.states.quote.system_response.playlist[2].type",
            "'video'",
        ),
        (
            _set_item("quote", 0, {"type": "cache", "key": "greeting"}),
            "$.states.quote.system_response.playlist[0].key",
            "static:name",
        ),
        (
            _set_item("quote", 2, {"type": "tts"}),
            "$.states.quote.system_response.playlist[2].text_template",
            "required field is missing",
        ),
        (
            _set_item("quote", 2, {"type": "tts", "text_template": "x", "voice": "alena"}),
            "$.states.quote.system_response.playlist[2].voice",
            "unknown field",
        ),
        (
            lambda d: d["settings"].update(intent_threshold=2),
            "$.settings.intent_threshold",
            "less than 1",
        ),
        (
            lambda d: d["entities"]["area_m2"].update(min="ten"),
            "$.entities.area_m2.min",
            "number",
        ),
        (lambda d: d.pop("initial_state"), "$.initial_state", "required field is missing"),
        (lambda d: d.update(colour="blue"), "$.colour", "unknown field"),
        (
            lambda d: d["states"]["quote"].update(action="HANGUP"),
            "$.states.quote.action",
            "END_CALL",
        ),
        (
            lambda d: d["audio"].update({"static:empty": ""}),
            '$.audio["static:empty"]',
            "at least 1 character",
        ),
    ],
)
def test_model_errors_name_the_json_path(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], path: str, problem: str
) -> None:
    err = load_error(broken(tmp_path, mutate))
    assert err.json_path == path
    assert problem in err.problem


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (lambda d: d.update(initial_state="hello"), "$.initial_state", "unknown state 'hello'"),
        (
            lambda d: d["states"]["greeting"]["transitions"].update(give_area="price"),
            "$.states.greeting.transitions.give_area",
            "unknown target state 'price'",
        ),
        (
            lambda d: d["states"]["greeting"]["transitions"].update(haggle="quote"),
            "$.states.greeting.transitions.haggle",
            "unknown intent 'haggle'",
        ),
        (
            lambda d: d["global_transitions"].update(operator="transfer"),
            "$.global_transitions.operator",
            "unknown target state 'transfer'",
        ),
        (
            lambda d: d["intents"]["give_area"].update(entities=["area"]),
            "$.intents.give_area.entities[0]",
            "unknown entity 'area'",
        ),
        (
            lambda d: d["intents"]["choose_day"].update(required_entities=["day"]),
            "$.intents.choose_day.required_entities[0]",
            "unknown entity 'day'",
        ),
        (
            lambda d: d["entities"].update(code={"type": "regex", "pattern": "(\\d+"}),
            "$.entities.code.pattern",
            "bad regex",
        ),
        (
            lambda d: d["states"]["quote"]["set_variables"].update(final_price="area_m2 *"),
            "$.states.quote.set_variables.final_price",
            "syntax error",
        ),
        (
            lambda d: d["states"]["quote"]["set_variables"].update(final_price="__import__('os').getpid()"),
            "$.states.quote.set_variables.final_price",
            "only calls of",
        ),
        (
            _set_item("quote", 2, {"type": "tts", "text_template": "{{ final_price }}"}),
            "$.states.quote.system_response.playlist[2].text_template",
            "unsupported placeholder",
        ),
        (
            lambda d: d["states"].update({"2nd": d["states"]["greeting"]}),
            '$.states["2nd"]',
            "id must be",
        ),
    ],
)
def test_reference_errors_name_the_json_path(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], path: str, problem: str
) -> None:
    err = load_error(broken(tmp_path, mutate))
    assert err.json_path == path
    assert problem in err.problem


def test_several_problems_are_counted(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["initial_state"] = "x"
        d["states"]["quote"]["transitions"]["agree"] = "y"

    err = load_error(broken(tmp_path, mutate))
    assert err.json_path == "$.initial_state"
    assert "(and 1 more problems)" in err.problem


def test_parse_dialogue_map_takes_parsed_json() -> None:
    m = parse_dialogue_map(example_data(), "inline")
    assert isinstance(m, DialogueMap)
    with pytest.raises(DialogueMapError, match=r"^inline: \$\.name: "):
        parse_dialogue_map({**example_data(), "name": 5}, "inline")


def test_json_path_quotes_odd_keys() -> None:
    assert json_path(("states", "quote", "playlist", 2)) == "$.states.quote.playlist[2]"
    assert json_path(("audio", "static:x")) == '$.audio["static:x"]'


def test_map_helpers() -> None:
    m = load_dialogue_map(EXAMPLE)
    assert m.next_state_id("greeting", "give_area") == "quote"
    assert m.next_state_id("greeting", "operator") == "transfer_operator"  # global
    assert m.dtmf_intent("quote", "0") == "operator" and m.dtmf_intent("quote", "5") is None
    assert not m.is_interruptible("transfer_operator")  # TRANSFER defaults to not interruptible
    assert m.next_state_id("greeting", "agree") is None
    assert m.is_interruptible("greeting")
    assert not m.is_interruptible("booked")  # END_CALL defaults to not interruptible
    assert not m.is_interruptible("goodbye_operator")
    assert m.intent("agree") is not None and m.intent("nope") is None


def test_schema_allows_dollar_schema_and_is_committed_up_to_date() -> None:
    schema = export_schema()
    assert "$schema" in schema["properties"]
    assert "audio" in schema["properties"]
    assert schema["additionalProperties"] is False
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "dialogue_maps/schema.json is stale: regenerate it with "
        "`python -c 'from orchestrator.dialogue_map.schema import write_schema; write_schema()'`"
    )
