"""Scripts that drive the stand-ins (test/demo only): what the caller says and what the LLM answers.

JSON file format (every part optional):

    {
      "stt": {"default": ["Здравствуйте.", "Сколько стоит доставка?"],
              "calls": {"<x-client-request-id>": ["Да.", "Нет, спасибо."]}},
      "llm": {"rules": [["(?i)доставк", "Доставка стоит триста рублей."]],
              "default": "Уточню у оператора.",
              "choices": [["(?i)безнал", "faq:payment"]]}
    }

`llm.choices` answer the constrained intent requests (`orchestrator.adapters.llm.arbiter`): the
first rule whose regex matches the caller's words and whose label is among the request's labels
wins; without one the stand-in picks by example similarity (see `openai_server.choose_label`).

STT: the stand-in releases one utterance per speech segment its VAD finds. A call is recognised
by the `x-client-request-id` metadata that `YandexSttStreamer(request_id=...)` sends (Yandex logs
it for support, so the real adapter sends it to Yandex too); a call with a script of its own under
`calls` gets that, any other call gets its own pass over `default`. The position in the script
survives stream renewals and reconnects of the same request id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.domain.errors import ConfigError


@dataclass
class SttScript:
    """Expected caller utterances: a default list and per-call lists keyed by request id."""

    default: list[str] = field(default_factory=list)
    calls: dict[str, list[str]] = field(default_factory=dict)
    _cursor: dict[str, int] = field(default_factory=dict)

    def set_call(self, request_id: str, utterances: Sequence[str]) -> None:
        """Give the call `request_id` its own utterances (from the start)."""
        self.calls[request_id] = list(utterances)
        self._cursor.pop(request_id, None)

    def next_utterance(self, request_id: str) -> str | None:
        """The next utterance of the call, or None when its script is used up."""
        lines = self.calls.get(request_id, self.default)
        i = self._cursor.get(request_id, 0)
        if i >= len(lines):
            return None
        self._cursor[request_id] = i + 1
        return lines[i]


@dataclass
class LlmScript:
    """Scripted chat answers: the first rule whose regex matches the last user message wins."""

    rules: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    default: str = "Понял вас. Сейчас уточню и вернусь с ответом."
    # Constrained intent requests: (regex on the caller's words, label) -> that label, if offered.
    choices: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    def add_choice(self, pattern: str, label: str) -> None:
        """Pick `label` for a constrained request whose caller text matches `pattern`."""
        self.choices.append((re.compile(pattern), label))

    def choice(self, user_text: str, labels: Sequence[str]) -> str | None:
        """The scripted label for `user_text` among `labels`, None when no rule applies."""
        for rx, label in self.choices:
            if label in labels and rx.search(user_text):
                return label
        return None

    def add(self, pattern: str, answer: str) -> None:
        """Answer `answer` when the last user message matches `pattern`."""
        self.rules.append((re.compile(pattern), answer))

    def answer(self, user_text: str) -> str:
        """The scripted answer to `user_text`."""
        for rx, answer in self.rules:
            if rx.search(user_text):
                return answer
        return self.default


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return list(value)


def parse_scripts(data: Mapping[str, object], source: str = "<script>") -> tuple[SttScript, LlmScript]:
    """Build both scripts from the JSON structure described in the module docstring."""
    stt, llm = SttScript(), LlmScript()
    stt_part = data.get("stt", {})
    if not isinstance(stt_part, dict):
        raise ConfigError(f"{source}: stt: expected an object")
    stt.default = _strings(stt_part.get("default", []), f"{source}: stt.default")
    calls = stt_part.get("calls", {})
    if not isinstance(calls, dict):
        raise ConfigError(f"{source}: stt.calls: expected an object")
    for rid, lines in calls.items():
        stt.set_call(str(rid), _strings(lines, f"{source}: stt.calls.{rid}"))
    llm_part = data.get("llm", {})
    if not isinstance(llm_part, dict):
        raise ConfigError(f"{source}: llm: expected an object")
    for i, rule in enumerate(llm_part.get("rules", [])):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(r, str) for r in rule)):
            raise ConfigError(f"{source}: llm.rules[{i}]: expected [regex, answer]")
        try:
            llm.add(rule[0], rule[1])
        except re.error as exc:
            raise ConfigError(f"{source}: llm.rules[{i}]: bad regex: {exc}") from exc
    for i, rule in enumerate(llm_part.get("choices", [])):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(r, str) for r in rule)):
            raise ConfigError(f"{source}: llm.choices[{i}]: expected [regex, label]")
        try:
            llm.add_choice(rule[0], rule[1])
        except re.error as exc:
            raise ConfigError(f"{source}: llm.choices[{i}]: bad regex: {exc}") from exc
    if "default" in llm_part:
        if not isinstance(llm_part["default"], str):
            raise ConfigError(f"{source}: llm.default: expected a string")
        llm.default = llm_part["default"]
    return stt, llm


def load_scripts(path: str | Path) -> tuple[SttScript, LlmScript]:
    """Read a script file (JSON, see the module docstring)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read script: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object")
    return parse_scripts(data, str(p))
