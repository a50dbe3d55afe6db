"""Reading a submitted form: its texts and numbers, or `FormProblem` saying in plain words what
to fix. Pure; shared by the pages that ask one question (`actions`) and the ones where people
write at length (`writing`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date


class FormProblem(ValueError):
    """A submitted form that cannot become a command; the message says what to fix."""


def form_text(form: Mapping[str, str], name: str, *, required: bool = False) -> str:
    value = form.get(name, "").strip()
    if required and not value:
        raise FormProblem(f"Please write something in “{name}” before sending.")
    return value


def form_int(form: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    value = form.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise FormProblem(f"Please give a whole number from {low} to {high}.")
    return int(value)


def form_lines(form: Mapping[str, str], name: str) -> list[str]:
    """A text box with one item a line: its non-empty lines."""
    return [line.strip() for line in form.get(name, "").splitlines() if line.strip()]


def form_date(form: Mapping[str, str], name: str) -> date | None:
    """A date field (YYYY-MM-DD, as a browser's date picker sends it); `ValueError` when it is not one."""
    value = form.get(name, "").strip()
    return date.fromisoformat(value) if value else None


class Problems:
    """Every problem of a form at once, so that one bad box is not fixed only to learn of the next."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, problem: str) -> None:
        self.found.append(problem)

    def raise_any(self) -> None:
        if self.found:
            raise FormProblem(" ".join(self.found) + " Nothing was sent yet: your text is kept below.")
