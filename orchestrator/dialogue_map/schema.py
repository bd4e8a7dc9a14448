"""JSON Schema of dialogue maps, for editors and for `voicebridge map schema`.

`dialogue_maps/schema.json` is generated from the pydantic models by `export_schema()`; a test
keeps the committed file in step with the models. The schema covers structure only: the
cross-references (known states, intents, entities) are checked by the loader and the lint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.dialogue_map.models import DialogueMap

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "dialogue_maps" / "schema.json"


def export_schema() -> dict[str, Any]:
    """The JSON Schema of a dialogue map (as a dict)."""
    schema = DialogueMap.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    """`export_schema()` as the exact text committed in dialogue_maps/schema.json."""
    return json.dumps(export_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write_schema(path: str | Path = SCHEMA_PATH) -> Path:
    """Write the schema file (default: dialogue_maps/schema.json); returns its path."""
    out = Path(path)
    out.write_text(schema_text(), encoding="utf-8")
    return out
