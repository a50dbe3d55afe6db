"""Which text in commands and events is confidential: one marker per text field.

Every `str` in an event, however deeply nested (agreement terms, goal assessments,
programme settings), carries one of two markers in its type annotation:

* `CONFIDENTIAL` — what mentees and mentors share in confidence: meeting notes, reasons,
  concerns and their resolutions, feedback and review comments, reflections. The event
  store encrypts these with the relationship's own data key, and `mentorflow forget`
  makes them unreadable for good.
* `NOT_CONFIDENTIAL` — ids, codes and text meant to be seen by everyone in the relationship
  and by operators (goal titles, resource titles, the matching explanation, …).

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
