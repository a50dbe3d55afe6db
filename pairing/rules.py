"""A programme's own rules (pairing.settings.MatchingRule) judged on profile attributes: for
one pair, with words for explanations, and for a whole block of pairs at once (numpy), the
two agreeing exactly (tests/matching/test_matching_rules.py).

A rule reads only the attributes it names, and only the values: never written anywhere.
Values are compared as the profile importer normalised them (text case- and
space-insensitively); a value of the wrong kind for its attribute's declaration (the
settings changed after an import) counts as missing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pairing.profiles import AttributeValue, Profile, normalise_topic
from pairing.settings import AttributeSpec, MatchingRule, MatchingSettings

_LIST_SEPARATORS = re.compile(r"[;,|]")

Value = float | str | frozenset[str]

MET, BROKEN, NOT_APPLIED = "met", "broken", "not applied: attribute not given"


def coerce(spec: AttributeSpec, raw: AttributeValue | str | int | list[str]) -> Value:
    """A value as its attribute's kind wants it; ValueError (saying why, without the value) if it cannot be."""
    if spec.kind == "number":
        if isinstance(raw, bool) or isinstance(raw, tuple | list):
            raise ValueError("must be a number")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if not np.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = f"{raw:g}"
    if spec.kind == "text":
        if isinstance(raw, tuple | list):
            if len(raw) != 1:
                raise ValueError("must be one value, not a list")
            raw = raw[0]
        text = normalise_topic(str(raw))
        if not text:
            raise ValueError("must not be empty")
        return text
    if isinstance(raw, bool):
        raise ValueError("must be one or more texts")
    items = _LIST_SEPARATORS.split(raw) if isinstance(raw, str) else [str(item) for item in raw]
    return frozenset(normalise_topic(item) for item in items if normalise_topic(item))


def value_of(profile: Profile, rule: MatchingRule, settings: MatchingSettings) -> Value | None:
    if rule.attribute is None:
        return None
    return _value(profile, rule.attribute, settings.attributes[rule.attribute])


def holds(rule: MatchingRule, mentee: Value, mentor: Value) -> bool:
    """Whether the rule's condition holds for two given values (the pair's own values)."""
    condition = rule.condition
    if condition == "window":
        assert isinstance(mentee, float) and isinstance(mentor, float)
        gap = mentor - mentee
        return (rule.min is None or gap >= rule.min) and (rule.max is None or gap <= rule.max)
    if isinstance(mentee, frozenset) and isinstance(mentor, frozenset):
        if condition == "shared":
            return bool(mentee & mentor)
        if condition == "different":
            return not mentee & mentor
        return mentee == mentor
    if condition == "different":
        return mentee != mentor
    return mentee == mentor  # same, shared on text


@dataclass(frozen=True)
class RuleOutcome:
    rule: MatchingRule
    # MET, BROKEN or NOT_APPLIED
    outcome: str
    # Integer points added (score terms that held).
    points: int = 0


def judge_pair(
    mentee: Profile, mentor: Profile, settings: MatchingSettings, *, has_mentor: bool = False
) -> list[RuleOutcome]:
    """Every rule of `settings` on one pair."""
    outcomes = []
    for rule in settings.rules:
        if rule.condition == "unmatched":
            met = not has_mentor
        else:
            a, b = value_of(mentee, rule, settings), value_of(mentor, rule, settings)
            if a is None or b is None:
                missing_breaks = rule.require is not None and rule.missing == "exclude"
                outcomes.append(RuleOutcome(rule, BROKEN if missing_breaks else NOT_APPLIED))
                continue
            met = holds(rule, a, b)
        points = settings.term_points(rule.points or 0) if rule.score is not None and met else 0
        outcomes.append(RuleOutcome(rule, MET if met else BROKEN, points))
    return outcomes


# -- a block of pairs at once ----------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    """One attribute of one side as arrays: codes (text, or a whole set), numbers, set membership."""

    given: np.ndarray  # bool
    codes: np.ndarray | None = None  # int64, text value or set id (-1: not given)
    numbers: np.ndarray | None = None  # float64 (nan: not given)
    members: np.ndarray | None = None  # float32 profiles × vocabulary


class RuleColumns:
    """The attributes the rules read, encoded once per cohort for both sides."""

    def __init__(
        self,
        mentees: Sequence[Profile],
        mentors: Sequence[Profile],
        settings: MatchingSettings,
        has_mentor: Sequence[bool] | None = None,
    ) -> None:
        self.settings = settings
        self.unmatched = ~np.asarray(has_mentor if has_mentor is not None else [False] * len(mentees), dtype=bool)
        self._sides: dict[str, tuple[_Side, _Side]] = {}
        for name in sorted({rule.attribute for rule in settings.rules if rule.attribute is not None}):
            spec = settings.attributes[name]
            values = [[_value(p, name, spec) for p in side] for side in (mentees, mentors)]
            self._sides[name] = _encode(spec.kind, values[0], values[1])

    def judge(self, rule: MatchingRule, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """(holds, known) for the block of mentees `rows` × every mentor, as bool matrices
        (broadcastable); `known`: both sides gave the attribute."""
        if rule.condition == "unmatched":
            held = self.unmatched[rows][:, None]
            return held, np.ones_like(held)
        assert rule.attribute is not None
        a, b = self._sides[rule.attribute]
        known = a.given[rows][:, None] & b.given[None, :]
        if rule.condition == "window":
            assert a.numbers is not None and b.numbers is not None
            with np.errstate(invalid="ignore"):
                gap = b.numbers[None, :] - a.numbers[rows][:, None]
                held = np.ones(gap.shape, dtype=bool)
                if rule.min is not None:
                    held &= gap >= rule.min
                if rule.max is not None:
                    held &= gap <= rule.max
            return held, known
        if a.members is not None and b.members is not None and rule.condition in ("shared", "different"):
            common = (a.members[rows] @ b.members.T) > 0
            return (common if rule.condition == "shared" else ~common), known
        if a.numbers is not None and b.numbers is not None:
            equal = a.numbers[rows][:, None] == b.numbers[None, :]
        else:
            assert a.codes is not None and b.codes is not None
            equal = a.codes[rows][:, None] == b.codes[None, :]
        return (~equal if rule.condition == "different" else equal), known


def _value(profile: Profile, name: str, spec: AttributeSpec) -> Value | None:
    if name not in profile.attributes:
        return None
    try:
        value = coerce(spec, profile.attributes[name])
    except ValueError:
        return None
    return None if isinstance(value, frozenset) and not value else value


def _encode(kind: str, mentees: list[Value | None], mentors: list[Value | None]) -> tuple[_Side, _Side]:
    given = [np.array([v is not None for v in side], dtype=bool) for side in (mentees, mentors)]
    if kind == "number":
        numbers = [np.array([np.nan if v is None else v for v in side], dtype=np.float64) for side in (mentees, mentors)]
        return _Side(given[0], numbers=numbers[0]), _Side(given[1], numbers=numbers[1])
    # Text values and whole sets get one code each (equality); set items a membership column.
    vocabulary: dict[Value, int] = {}
    codes = [
        np.array([-1 if v is None else vocabulary.setdefault(v, len(vocabulary)) for v in side], dtype=np.int64)
        for side in (mentees, mentors)
    ]
    if kind == "text":
        return _Side(given[0], codes=codes[0]), _Side(given[1], codes=codes[1])
    items: dict[str, int] = {}
    for side in (mentees, mentors):
        for value in side:
            if isinstance(value, frozenset):
                for item in value:
                    items.setdefault(item, len(items))
    members = []
    for side in (mentees, mentors):
        matrix = np.zeros((len(side), max(1, len(items))), dtype=np.float32)
        for row, value in enumerate(side):
            if isinstance(value, frozenset):
                matrix[row, [items[item] for item in value]] = 1
        members.append(matrix)
    return (_Side(given[0], codes=codes[0], members=members[0]), _Side(given[1], codes=codes[1], members=members[1]))


def declared_problems(attributes: Mapping[str, AttributeValue], settings: MatchingSettings) -> list[str]:
    """What is wrong with a profile's attributes for this programme (undeclared, wrong kind)."""
    problems = []
    for name, raw in attributes.items():
        spec = settings.attributes.get(name)
        if spec is None:
            problems.append(f"attributes.{name}: not declared in the programme's matching settings")
            continue
        try:
            coerce(spec, raw)
        except ValueError as error:
            problems.append(f"attributes.{name}: {error} (a {spec.kind} attribute)")
    return problems
