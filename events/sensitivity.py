"""Which text in commands and events is confidential: one marker per text field.

Every `str` in an event, however deeply nested (agreement terms, goal assessments,
programme settings), carries one of two markers in its type annotation:

* `CONFIDENTIAL` — the default for free text: meeting notes, reasons, concerns and their
  resolutions, feedback and review comments, reflections, and the agreement itself (its
  objective, goals with measures and milestones, not-private list, early-exit plan), match
  explanations, introductions and shared resources. The event store encrypts these with
  the relationship's own data key, and `mentorflow forget` makes them unreadable for good.
* `NOT_CONFIDENTIAL` — only what is not free text and is needed in plain by a report, a
  projection, a search or SQL: ids, codes, message names, digests, IANA time zone names,
  texts the system writes itself (refusal reasons). Each such field says why where it is
  declared; `tests/store/test_data_keys.py` lists every plain field, so adding one is deliberate.

`unmarked_text_fields` lists any `str` with neither marker; a test keeps that list empty
for every event type, so a new field has to be classified before it can be stored.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

# A step in a path into a stored payload: a field name, or ITEM for every element of a
# list or tuple.
ITEM = "*"
FieldPath = tuple[str, ...]


class Sensitivity(enum.Enum):
    CONFIDENTIAL = "confidential"
    NOT_CONFIDENTIAL = "not confidential"


CONFIDENTIAL = Sensitivity.CONFIDENTIAL
NOT_CONFIDENTIAL = Sensitivity.NOT_CONFIDENTIAL

# For event fields (no length limits: a stored event must always load again).
ConfidentialText = Annotated[str, CONFIDENTIAL]
NotConfidential = Annotated[str, NOT_CONFIDENTIAL]


def _marker(metadata: typing.Iterable[object]) -> Sensitivity | None:
    found = [item for item in metadata if isinstance(item, Sensitivity)]
    return found[-1] if found else None


def _walk(annotation: Any, marker: Sensitivity | None, path: FieldPath) -> Iterator[tuple[FieldPath, Sensitivity | None]]:
    """Every `str` leaf reachable from `annotation`, with the marker in force there."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = typing.get_args(annotation)
        yield from _walk(inner, _marker(metadata) or marker, path)
    elif annotation is str:
        yield path, marker
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from _walk(field.annotation, _marker(field.metadata), (*path, name))
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            yield from _walk(option, marker, path)
    elif origin in (tuple, list, set, frozenset):
        for item in typing.get_args(annotation):
            if item is not Ellipsis:
                yield from _walk(item, marker, (*path, ITEM))
    elif origin is dict:
        key, value = typing.get_args(annotation)
        yield from _walk(key, marker, (*path, "<key>"))
        yield from _walk(value, marker, (*path, ITEM))
    elif origin is Literal or annotation is type(None) or isinstance(annotation, type):
        return  # codes (Literal, StrEnum), numbers, dates, booleans: no free text
    else:
        raise TypeError(f"cannot classify the text in {annotation!r} at {'.'.join(path)}")


@cache
def confidential_paths(model: type[BaseModel]) -> tuple[FieldPath, ...]:
    """Where a model's confidential text sits in its JSON form, e.g. ("goal_assessments", "*", "comment")."""
    return tuple(path for path, marker in _walk(model, None, ()) if marker is CONFIDENTIAL)


def unmarked_text_fields(model: type[BaseModel]) -> list[str]:
    """Dotted paths of text fields that are neither confidential nor declared not confidential."""
    return [".".join(path) for path, marker in _walk(model, None, ()) if marker is None]


def not_confidential_fields(model: type[BaseModel]) -> list[str]:
    """Dotted paths of the text fields declared not confidential (stored in plain)."""
    return [".".join(path) for path, marker in _walk(model, None, ()) if marker is NOT_CONFIDENTIAL]


def redacted_json(model: BaseModel, replacement: str) -> dict[str, Any]:
    """The model's JSON form with every non-empty confidential text replaced by `replacement`:
    for readers not entitled to it (e.g. the `state` query shown to a read-only API key,
    which holds the agreement and goals)."""
    data: dict[str, Any] = model.model_dump(mode="json")

    def replace(node: Any, rest: FieldPath) -> Any:
        if not rest:
            return replacement if isinstance(node, str) and node else node
        step, tail = rest[0], rest[1:]
        if step == ITEM:
            if isinstance(node, list):
                return [replace(item, tail) for item in node]
            if isinstance(node, dict):
                return {key: replace(item, tail) for key, item in node.items()}
        elif isinstance(node, dict) and step in node:
            return {**node, step: replace(node[step], tail)}
        return node

    for path in confidential_paths(type(model)):
        data = replace(data, path)
    return data
