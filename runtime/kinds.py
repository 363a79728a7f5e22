"""JSON kinds and text: the reference definitions that the readers (runtime/sources.py) and the row
checks and type census (runtime/rows.py) share. The columnar checks agree with them (tested).

- `kind_of`: the JSON kind of one value, as the type census counts it;
- `KIND_WORDS`: each kind in words, for quarantine reasons and errors;
- `render_text`: a JSON value as plain text (standardize: true);
- `rejection`: why a value of a kind cannot be used as-is, and the setting that would convert it.
"""

from __future__ import annotations

import json

KIND_WORDS = {"string": "text", "json_string": "stringified JSON", "number": "a number", "bool": "true/false",
              "list": "a JSON list", "dict": "a JSON object", "null": "null or missing", "empty": "empty",
              "other": "of a non-JSON type"}


def kind_of(value) -> str:
    """The JSON kind of one value, as the type census counts it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (dict, list)):
        return ("dict" if isinstance(value, dict) else "list") if value else "empty"
    if isinstance(value, str):
        if not value.strip():
            return "empty"
        return "json_string" if _parses_as_json(value) else "string"
    return "other"


def _parses_as_json(text: str) -> bool:
    """A string that is JSON itself: an object, a list, or a quoted (doubly encoded) string."""
    t = text.strip()
    if len(t) < 2 or (t[0], t[-1]) not in (("{", "}"), ("[", "]"), ('"', '"')):
        return False
    try:
        json.loads(t)
    except ValueError:
        return False
    return True


def render_text(value) -> str:
    """A JSON value as plain text (standardize: true). An object becomes 'Key: value' lines, which is how
    seed 002 standardized {"explanation": ..., "answer": ...} into 'Explanation: ...\\nAnswer: ...'; a
    list becomes one item per line; nested structures inside an object stay compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if v is None or v == "" or v == [] or v == {}:
                continue
            label = str(k).replace("_", " ").strip()
            text = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else render_text(v)
            lines.append(f"{label[:1].upper()}{label[1:]}: {text}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(render_text(v) for v in value if v is not None)
    return str(value)


def rejection(kind: str, column: str, messages: bool = False) -> str:
    """Why a value of this kind cannot be used as-is, and the setting that would convert it."""
    if kind in ("null", "empty"):
        return f"'{column}' is {KIND_WORDS[kind]}"
    if messages:
        fix = " (standardize: true parses it)" if kind == "json_string" else ""
        return f"'{column}' is {KIND_WORDS[kind]}, not a list of {{role, content}} turns{fix}"
    fix = " (standardize: true converts it)" if kind in ("json_string", "dict", "list", "number") else ""
    return f"'{column}' is {KIND_WORDS[kind]}, not text{fix}"
