"""User-facing errors: one line per problem, naming the file and the field path.

Bad input never produces a traceback. Everything that can be wrong in a spec is collected as a
`Problem` and raised together in one `SpecError`; the CLI prints one line per problem and exits
with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (a dotted field path, may be empty) and what."""

    path: str
    message: str

    def render(self, source: str | None) -> str:
        where = [part for part in (source, self.path) if part]
        return ": ".join([*where, self.message])


class SpecError(Exception):
    """Bad input: a spec, an override or a component parameter. Carries every problem found."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [problem.render(self.source) for problem in self.problems]

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.problems, source)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close.

    Dotted keys are compared by their last part among keys with the same parent, so that a
    shared prefix ('model.params.') does not make unrelated names look alike.
    """
    candidates = list(candidates)
    parent, _, leaf = word.rpartition(".")
    if parent:
        siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == parent}
        if siblings:
            close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
            return f" (did you mean {siblings[close[0]]!r}?)" if close else ""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def show_value(value: Any) -> str:
    """A value as the user wrote it in YAML, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- pydantic errors -> problems -----------------------------------------------------------
# Written by hand because pydantic's messages describe its internals ("Input should be a valid
# number, unable to parse string as a number", one error per union member), while users need
# one line per field that says what was expected in their terms ("expected a number between 0
# and 1, got 'high'"). The expectation is read from the model's JSON schema, so every field
# gets the same wording without per-field code.


def problems_from_validation_error(
    error: ValidationError, schema: dict[str, Any], prefix: Sequence[str | int] = ()
) -> list[Problem]:
    """Convert a pydantic ValidationError into one Problem per offending field."""
    defs = schema.get("$defs", {})
    by_path: dict[tuple, list[tuple[dict, dict[str, Any] | None]]] = {}
    for item in error.errors(include_url=False):
        path, field_schema, parent_schema = _walk(schema, defs, item["loc"])
        by_path.setdefault(tuple(path), []).append((item, field_schema, parent_schema))

    problems = []
    for path, items in by_path.items():
        dotted = ".".join(str(part) for part in (*prefix, *path))
        problems.append(Problem(dotted, _message(items, defs)))
    return problems


# The tags of a section that may be written once or as a mapping of named sections
# (`optimizer`, `schedule`): pydantic puts them in error locations; users never see them.
SECTION_FORMS = ("<one section>", "<named sections>")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _walk(schema: dict, defs: dict, loc: Sequence[str | int]) -> tuple[list, dict | None, dict | None]:
    """Follow an error location through the schema.

    Returns the user-visible path (union-member tags that pydantic inserts, such as 'int' or
    "literal['auto']", are dropped), the schema of the field and the schema of its parent.
    """
    path: list[str | int] = []
    node: dict | None = _resolve(schema, defs)
    parent: dict | None = None
    for part in loc:
        if node is None:
            path.append(part)
            continue
        node = _resolve(node, defs)
        if part in SECTION_FORMS and (options := node.get("oneOf", node.get("anyOf"))):
            node = _resolve(options[SECTION_FORMS.index(part)], defs)  # one section, or named ones
            continue
        member = _member_with(node, part, defs)
        if member is not None:  # an optional section (`Section | None`): go on in the section
            node = member
        properties = node.get("properties", {})
        if isinstance(part, str) and part in properties:
            parent, node = node, properties[part]
            path.append(part)
        elif isinstance(part, int) and ("items" in node or "prefixItems" in node):
            items = node.get("prefixItems")
            parent, node = node, (items[part] if items and part < len(items) else node.get("items"))
            path.append(part)
        elif isinstance(part, str) and _values_of(node) is not None:
            parent, node = node, _values_of(node)
            path.append(part)
        elif "anyOf" in node or "oneOf" in node:
            # A union member tag: stay on the union itself so one message covers all members.
            continue
        else:
            parent, node = node, None
            path.append(part)
    return path, node, parent


def _member_with(node: dict, part: str | int, defs: dict) -> dict | None:
    """The member of a union node that has `part` as a property (or takes any keys), if any."""
    if not isinstance(part, str):
        return None
    for option in node.get("anyOf", node.get("oneOf", [])):
        option = _resolve(option, defs)
        if part in option.get("properties", {}) or _values_of(option) is not None:
            return option
    return None


def _values_of(node: dict) -> dict | None:
    """The schema of a mapping's values (`dict[str, X]`, with or without a key pattern)."""
    if isinstance(node.get("additionalProperties"), dict):
        return node["additionalProperties"]
    patterns = list(node.get("patternProperties", {}).values())
    return patterns[0] if len(patterns) == 1 else None


def _message(items: list[tuple[dict, dict | None, dict | None]], defs: dict) -> str:
    first, field_schema, parent_schema = items[0]
    kinds = {item["type"] for item, _, _ in items}
    if "extra_forbidden" in kinds:
        key = str(first["loc"][-1])
        known = (parent_schema or {}).get("properties", {})
        hint = did_you_mean(key, known) if known else ""
        return f"unknown key {key!r}{hint}"
    if "missing" in kinds:
        return "required field is missing"
    for item, _, _ in items:
        if item["type"] in ("value_error", "assertion_error"):
            return item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if field_schema is not None:
        return f"expected {describe(field_schema, defs)}, got {show_value(first['input'])}"
    return f"{first['msg'][0].lower()}{first['msg'][1:]}, got {show_value(first['input'])}"


def describe(node: dict[str, Any], defs: dict[str, Any]) -> str:
    """Say in words what a JSON-schema node accepts: 'a number between 0 and 1'."""
    node = _resolve(node, defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [describe(option, defs) for option in node[key]]
            return " or ".join(dict.fromkeys(options))
    if "const" in node:
        return show_value(node["const"])
    if "enum" in node:
        values = [show_value(value) for value in node["enum"]]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    kind = node.get("type")
    if kind in ("number", "integer"):
        noun = "a number" if kind == "number" else "an integer"
        return noun + _bounds(node)
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a string" + (f" matching {node['pattern']}" if "pattern" in node else "")
    if kind == "null":
        return "null"
    if kind == "array":
        if "prefixItems" in node:
            inner = ", ".join(describe(item, defs) for item in node["prefixItems"])
            return f"a list of {len(node['prefixItems'])} ({inner})"
        size = " non-empty" if node.get("minItems", 0) >= 1 else ""
        items = node.get("items")
        return f"a{size} list" + (f" of {_plural(describe(items, defs))}" if items else "")
    if kind == "object":
        return "a mapping"
    return "a valid value"


def _bounds(node: dict[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    low_open, high_open = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f" between {low:g} and {high:g}"
    parts = []
    if low is not None:
        parts.append(f">= {low:g}")
    if low_open is not None:
        parts.append(f"> {low_open:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    if high_open is not None:
        parts.append(f"< {high_open:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _plural(description: str) -> str:
    for article in ("an ", "a "):
        if description.startswith(article):
            head, _, rest = description[len(article) :].partition(" ")
            return f"{head}s {rest}".strip()
    return description
