"""Profiles from the CSV and JSON files programmes keep in spreadsheets.

Every bad row is reported with its line and the reason, and the good rows still come
through. Cells use a small syntax that survives spreadsheets:

| column | example |
| --- | --- |
| `participant_id` | `emp-1042` |
| `role` | `mentor` or `mentee` (or given once for the whole file) |
| `timezone` | `Europe/Berlin` |
| `seniority` | `4` (0–20) |
| `capacity` (mentors) | `2` |
| `strengths` (mentors) | `python:5; system design:4` (level 1–5, default 3) |
| `goals` (mentees) | `public speaking:3; python` (priority 1–3, default 1) |
| `availability` | `mon-fri 09:00-10:00; wed 18:00-20:30` (in the participant's time zone) |
| `languages` | `en; de` |
| `formats` | `video; in person; phone; chat` |
| `reports_to` | `emp-7; emp-2` (the management chain, direct manager first) |
| `previous_partners`, `opt_out`, `preferred` | `emp-3; emp-9` |
| `mentor_quota` (mentees) | `2` (mentors at once; default: the programme's) |
| `attr:NAME` | `attr:grade` = `5`, `attr:characteristics` = `carer; lgbt+` |
| `active` | `yes` / `no` |

`attr:NAME` columns carry the programme's own attributes (declared in its matching
settings with a kind and a confidentiality class); in JSON they are one object,
`"attributes": {"grade": 5, "characteristics": ["carer", "lgbt+"]}`. Given the programme's
settings, each value is checked against its declaration (an undeclared attribute or a
value of the wrong kind rejects the row) and stored in its kind's form; a cell left empty
means the attribute is not given.

Lists may be separated by `;`, `,` or `|`. JSON files hold an array of objects (or one
object per line) with the same keys; there a value may also be a real list
(`"languages": ["en", "de"]`, `"strengths": {"python": 5}` or
`[{"topic": "python", "level": 5}]`). Columns or keys the importer does not know (a name,
an email address) are ignored and listed, so a misspelt column does not go unnoticed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pairing.profiles import WEEKDAYS, AnyProfile, MenteeProfile, MentorProfile, Role
from pairing.rules import coerce
from pairing.settings import MatchingSettings

FileFormat = Literal["csv", "json"]

_LIST_SEPARATORS = re.compile(r"[;,|]")
_WINDOW = re.compile(r"^([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$")
_FORMAT_ALIASES = {"in person": "in_person", "in-person": "in_person", "inperson": "in_person", "f2f": "in_person",
                   "face to face": "in_person", "online": "video", "call": "phone"}  # fmt: skip
_TRUE = {"yes", "y", "true", "1", "active"}
_FALSE = {"no", "n", "false", "0", "inactive"}

KNOWN_FIELDS = set(MenteeProfile.model_fields) | set(MentorProfile.model_fields)
# A CSV column (or JSON key) `attr:grade` is the attribute `grade`.
ATTRIBUTE_PREFIX = "attr:"


class RowProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int
    participant_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" ({self.participant_id})" if self.participant_id else ""
        return f"line {self.line}{who}: {self.reason}"


class ParsedProfiles(BaseModel):
    model_config = ConfigDict(frozen=True)

    profiles: list[tuple[int, AnyProfile]]
    problems: list[RowProblem]
    ignored_columns: list[str]


class RowError(ValueError):
    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.line = line


def parse_profiles(
    text: str, file_format: FileFormat, *, role: Role | None = None, settings: MatchingSettings | None = None
) -> ParsedProfiles:
    """Read profiles from a file's text. `role` applies to rows without a `role` column;
    `settings`: the programme's, to check attributes against their declarations."""
    profiles: list[tuple[int, AnyProfile]] = []
    problems: list[RowProblem] = []
    ignored: set[str] = set()
    first_line: dict[tuple[str, str], int] = {}
    try:
        rows = list(_csv_rows(text) if file_format == "csv" else _json_rows(text))
    except RowError as error:
        problem = RowProblem(line=error.line or 1, participant_id=None, reason=str(error))
        return ParsedProfiles(profiles=[], problems=[problem], ignored_columns=[])
    for line, row in rows:
        given_id = row.get("participant_id") if isinstance(row, Mapping) else None
        participant_id = given_id if isinstance(given_id, str) and given_id else None
        try:
            if isinstance(row, RowError):
                raise row
            if not isinstance(row, Mapping):
                raise RowError("expected an object with the profile's fields")
            ignored |= {str(key) for key in row if key not in KNOWN_FIELDS and not str(key).startswith(ATTRIBUTE_PREFIX)}
            profile = profile_from_row(row, role=role, settings=settings)
        except RowError as error:
            problems.append(RowProblem(line=line, participant_id=participant_id, reason=str(error)))
            continue
        except ValidationError as error:
            problems.append(RowProblem(line=line, participant_id=participant_id, reason=describe_errors(error)))
            continue
        key = (profile.role, profile.participant_id)
        if key in first_line:
            reason = f"{profile.role} {profile.participant_id} already appears on line {first_line[key]}"
            problems.append(RowProblem(line=line, participant_id=profile.participant_id, reason=reason))
            continue
        first_line[key] = line
        profiles.append((line, profile))
    return ParsedProfiles(profiles=profiles, problems=problems, ignored_columns=sorted(ignored))


def profile_from_row(
    row: Mapping[str, Any], *, role: Role | None = None, settings: MatchingSettings | None = None
) -> AnyProfile:
    """One profile from one row or object (cells in the spreadsheet syntax, or JSON values)."""
    given_role = _text(row.get("role")) or role
    if given_role not in ("mentor", "mentee"):
        raise RowError("role must be mentor or mentee")
    fields: dict[str, Any] = {}
    attributes = _attributes(row, settings)
    if attributes:
        fields["attributes"] = attributes
    for name, value in row.items():
        if name not in KNOWN_FIELDS or name in ("role", "attributes") or _blank(value):
            continue
        if name == "strengths":
            value = _pairs(value, "topic", "level")
        elif name == "goals":
            value = _pairs(value, "topic", "priority")
        elif name == "availability":
            value = _windows(value)
        elif name == "formats":
            value = [_FORMAT_ALIASES.get(f, f).replace(" ", "_") for f in (item.lower() for item in _list(value))]
        elif name == "languages":
            value = [language.lower() for language in _list(value)]
        elif name in ("reports_to", "previous_partners", "opt_out", "preferred"):
            value = _list(value)
        elif name == "active":
            value = _flag(value)
        elif isinstance(value, str):
            value = value.strip()
        fields[name] = value
    model = MentorProfile if given_role == "mentor" else MenteeProfile
    misplaced = sorted(set(fields) - set(model.model_fields))
    if misplaced:
        raise RowError(f"a {given_role} has no {', '.join(misplaced)}")
    return model.model_validate(fields)


def _attributes(row: Mapping[str, Any], settings: MatchingSettings | None) -> dict[str, Any]:
    """The row's attributes (`attributes` object and `attr:NAME` cells), checked against the
    programme's declarations when `settings` are given (then in their kind's form)."""
    given = row.get("attributes")
    if not _blank(given) and not isinstance(given, Mapping):
        raise RowError("attributes must be an object of NAME: VALUE (in CSV: one attr:NAME column each)")
    found: dict[str, Any] = dict(given) if isinstance(given, Mapping) else {}
    for key, value in row.items():
        if str(key).startswith(ATTRIBUTE_PREFIX):
            found[str(key).removeprefix(ATTRIBUTE_PREFIX)] = value
    found = {name: value for name, value in found.items() if not _blank(value) and value != []}
    if settings is None:
        return found
    checked: dict[str, Any] = {}
    for name, value in sorted(found.items()):
        spec = settings.attributes.get(name)
        if spec is None:
            declared = ", ".join(sorted(settings.attributes)) or "none"
            raise RowError(f"attributes.{name}: not declared in the programme's matching settings (declared: {declared})")
        try:
            canonical = coerce(spec, value)
        except ValueError as error:
            raise RowError(f"attributes.{name}: {error} (a {spec.kind} attribute)") from None
        checked[name] = sorted(canonical) if isinstance(canonical, frozenset) else canonical
    return checked


def describe_errors(error: ValidationError) -> str:
    """Name every bad field and what is wrong, without echoing the values."""
    problems = []
    for detail in error.errors():
        location = ".".join(str(part) for part in detail["loc"]) or "row"
        message = detail["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return "; ".join(problems)


# -- cells -------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [item.strip() for item in _LIST_SEPARATORS.split(value) if item.strip()]
    if isinstance(value, list | tuple):
        return [item.strip() if isinstance(item, str) else item for item in value]
    raise RowError("expected a list")


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise RowError("active must be yes or no")
    return value


def _pairs(value: Any, key: str, number: str) -> list[Any]:
    """'python:5; sql' or {"python": 5} or [{"topic": …}] → [{"topic": "python", …}]."""
    if isinstance(value, Mapping):
        return [{key: topic, number: amount} for topic, amount in value.items()]
    items = []
    for item in _list(value):
        if not isinstance(item, str):
            items.append(item)
            continue
        topic, _, amount = item.rpartition(":") if ":" in item else (item, "", "")
        if not amount:
            items.append({key: topic})
            continue
        if not amount.strip().isdigit():
            raise RowError(f"{number} of {topic.strip()!r} must be a whole number")
        items.append({key: topic, number: int(amount)})
    return items


def _windows(value: Any) -> list[Any]:
    """'mon-fri 09:00-10:00; sat 10:00-12:00' → one window per day."""
    windows: list[Any] = []
    for item in _list(value):
        if not isinstance(item, str):
            windows.append(item)
            continue
        match = _WINDOW.match(item.lower())
        if not match:
            raise RowError(f"availability {item!r} is not like 'mon 09:00-12:00' or 'mon-fri 18:00-19:00'")
        first, last, start, end = match.groups()
        if first not in WEEKDAYS or (last is not None and last not in WEEKDAYS):
            raise RowError(f"availability {item!r}: days are mon, tue, wed, thu, fri, sat, sun")
        a = WEEKDAYS.index(first)
        b = WEEKDAYS.index(last) if last else a
        days = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        windows.extend({"day": WEEKDAYS[day], "start": start, "end": end} for day in days)
    return windows


# -- files -------------------------------------------------------------------------------


def _csv_rows(text: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), skipinitialspace=True)
    if not reader.fieldnames or "participant_id" not in [_column(name) for name in reader.fieldnames]:
        raise RowError("the first line must name the columns, including participant_id")
    for row in reader:
        cells = {_column(name): value for name, value in row.items() if name is not None}
        if all(_blank(value) for value in cells.values()):
            continue
        if None in row:
            yield reader.line_num, RowError(f"more cells than the {len(reader.fieldnames)} columns")
            continue
        yield reader.line_num, cells


def _column(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


def _json_rows(text: str) -> Iterator[tuple[int, Any]]:
    """Each element of a top-level array (or each object of JSON Lines) with the line it starts on."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    in_array = text.startswith("[", position)
    if in_array:
        position = _skip_space(text, position + 1)
    while position < len(text):
        if in_array and text.startswith("]", position):
            return
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise RowError(f"not valid JSON ({error.msg}); nothing was imported", error.lineno) from None
        yield line, value
        position = _skip_space(text, position)
        if in_array and text.startswith(",", position):
            position = _skip_space(text, position + 1)
    if in_array:
        raise RowError("the JSON array is not closed; nothing was imported", text.count("\n") + 1)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position
