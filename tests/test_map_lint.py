"""`voicebridge map lint`: each problem class found on a broken copy of the example map."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dialogue_map.lint import LintIssue, lint_map, run_map_lint

MAPS = Path(__file__).resolve().parents[1] / "dialogue_maps"
EXAMPLE = MAPS / "cleaning_quote.ru.json"


def broken(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    data = copy.deepcopy(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    mutate(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def find(issues: list[LintIssue], severity: str, path: str, words: str) -> LintIssue:
    hits = [i for i in issues if i.severity == severity and i.json_path == path]
    hits = [i for i in hits if words in i.message]
    assert hits, f"no {severity} at {path} with {words!r} in {issues}"
    return hits[0]


def test_example_is_clean() -> None:
    assert lint_map(EXAMPLE) == []


def test_json_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x",\n "states": }', encoding="utf-8")
    (issue,) = lint_map(path)
    assert issue.severity == "error" and issue.json_path == "$"
    assert "line 2, column 12" in issue.message


def test_all_model_errors_are_reported(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["states"]["quote"]["system_response"]["playlist"][2]["type"] = "video"
        d["settings"]["operation_timeout_s"] = -1

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.states.quote.system_response.playlist[2].type", "video")
    find(issues, "error", "$.settings.operation_timeout_s", "greater than 0")


def test_unknown_state_reference(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["states"]["quote"]["transitions"]["agree"] = "ask_date"
        d["global_transitions"]["operator"] = "transfer"

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.states.quote.transitions.agree", "unknown target state 'ask_date'")
    find(issues, "error", "$.global_transitions.operator", "unknown target state 'transfer'")
    # ask_day is no longer reachable: the lint goes on past reference errors
    find(issues, "warning", "$.states.ask_day", "unreachable")


def test_unreachable_state(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["states"]["survey"] = {
            "system_response": {"playlist": [{"type": "cache", "key": "static:greeting"}]},
            "transitions": {"agree": "booked"},
        }

    issues = lint_map(broken(tmp_path, mutate))
    assert issues == [
        LintIssue(
            "warning", "$.states.survey", "state 'survey' is unreachable from the initial state 'greeting'"
        )
    ]


def test_dead_end(tmp_path: Path) -> None:
    issues = lint_map(broken(tmp_path, lambda d: d["states"]["ask_day"].update(transitions={})))
    find(issues, "error", "$.states.ask_day", "dead end")


def test_end_call_with_transitions_is_a_warning(tmp_path: Path) -> None:
    path = broken(tmp_path, lambda d: d["states"]["booked"].update(transitions={"agree": "quote"}))
    find(lint_map(path), "warning", "$.states.booked.transitions", "never used")


def test_unknown_template_variable(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["states"]["quote"]["system_response"]["playlist"][2]["text_template"] = (
            "{{ session.variables.total_price }}"
        )
        d["faq"]["payment"]["answer"].append(
            {"type": "tts", "text_template": "{{ session.variables.discount }} процентов"}
        )

    issues = lint_map(broken(tmp_path, mutate))
    find(
        issues,
        "error",
        "$.states.quote.system_response.playlist[2].text_template",
        "unknown template variable 'total_price'",
    )
    find(issues, "error", "$.faq.payment.answer[1].text_template", "'discount'")


def test_unknown_expression_variable(tmp_path: Path) -> None:
    path = broken(tmp_path, lambda d: d["states"]["quote"]["set_variables"].update(base_price="area * 150"))
    find(lint_map(path), "error", "$.states.quote.set_variables.base_price", "unknown variable 'area'")


def test_audio_key_no_one_can_produce(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        del d["audio"]["filler:calculating"]
        d["settings"]["emergency_filler_key"] = "static:oops"
        d["audio"]["static:unused"] = "Никто меня не играет."

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.states.quote.fillers[0]", "'filler:calculating' has no text")
    find(issues, "error", "$.settings.emergency_filler_key", "'static:oops'")
    find(issues, "warning", '$.audio["static:emergency"]', "never played")
    find(issues, "warning", '$.audio["static:unused"]', "never played")


def test_unused_intent_is_a_warning(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["intents"]["thanks"] = {"examples": ["спасибо большое"]}

    issues = lint_map(broken(tmp_path, mutate))
    assert issues == [
        LintIssue("warning", "$.intents.thanks", "intent 'thanks' is not used by any transition")
    ]


def test_required_entity_not_among_the_intents_entities(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["intents"]["agree"]["required_entities"] = ["visit_day"]

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.intents.agree.required_entities[0]", "not among the intent's")
    find(issues, "warning", "$.intents.agree.clarify_playlist", "no clarify playlist")


def test_duplicate_phrases(tmp_path: Path) -> None:
    at: dict[str, int] = {}

    def mutate(d: dict[str, Any]) -> None:
        at["refuse"] = len(d["intents"]["refuse"]["examples"])
        at["too_expensive"] = len(d["faq"]["too_expensive"]["questions"])
        d["intents"]["refuse"]["examples"].append("Да!")
        d["faq"]["too_expensive"]["questions"].append("нет")

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "warning", f"$.intents.refuse.examples[{at['refuse']}]", "$.intents.agree.examples[0]")
    find(
        issues,
        "warning",
        f"$.faq.too_expensive.questions[{at['too_expensive']}]",
        "$.intents.refuse.examples[0]",
    )


def test_run_map_lint_output_and_status(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_map_lint(str(EXAMPLE), out=out) == 0
    assert out.getvalue() == ""

    path = broken(tmp_path, lambda d: d["states"]["ask_day"].update(transitions={}))
    out = io.StringIO()
    assert run_map_lint(str(path), out=out) == 1
    assert out.getvalue().splitlines() == [
        f"{path}: $.states.ask_day: error: dead end: state 'ask_day' has no transitions and no "
        "END_CALL action"
    ]


def test_warnings_alone_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = broken(tmp_path, lambda d: d["intents"].update(thanks={"examples": ["спасибо"]}))
    assert run_map_lint(str(path)) == 0
    assert "warning: intent 'thanks'" in capsys.readouterr().out


def test_directory_mode(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_map_lint(str(MAPS), out=out) == 0  # every example map, schema.json skipped
    assert run_map_lint(str(tmp_path), out=out) == 1
    assert "no dialogue maps" in out.getvalue()
    assert run_map_lint(str(tmp_path / "missing.json"), out=io.StringIO()) == 1


def test_impossible_entity_bounds(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["entities"]["area_m2"]["min"] = 2000
        d["entities"]["phone"] = {"type": "digits", "min_length": 11, "max_length": 10}
        d["settings"]["business_hours"] = {"open": "22:00", "close": "08:00"}

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.entities.area_m2", "min 2000 is above max 1000")
    find(issues, "error", "$.entities.phone", "min_length 11 is above max_length 10")
    find(issues, "error", "$.settings.business_hours", "close (08:00) before they open (22:00)")


def test_regex_entity_must_match_its_examples(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["entities"]["order"] = {
            "type": "regex",
            "pattern": r"\bЗ-\d{4}\b",
            "examples": ["З-1234", "заказ 12"],
        }
        d["entities"]["code"] = {"type": "regex", "pattern": r"\d+"}

    issues = lint_map(broken(tmp_path, mutate))
    find(issues, "error", "$.entities.order.examples[1]", "does not match its example 'заказ 12'")
    assert not [i for i in issues if i.json_path == "$.entities.order.examples[0]"]
    find(issues, "warning", "$.entities.code.pattern", "no examples")


def test_unknown_time_zone_is_rejected(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["settings"]["time_zone"] = "Europe/Atlantis"

    find(lint_map(broken(tmp_path, mutate)), "error", "$.settings.time_zone", "unknown time zone")
