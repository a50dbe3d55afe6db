"""What a programme configures about matching: criterion weights, hard constraints, the
round objective, and its own rules on profile attributes (issue #17).

Rules are data, so a programme writes them in its settings file:

```yaml
attributes:                       # what profiles may carry in `attributes`, and how secret it is
  organisation: {kind: text, confidential: false}
  grade: {kind: number, confidential: false}
  profession: {kind: text}
  characteristics: {kind: set}    # sensitive personal data: confidential (the default)
rules:
  - {name: other organisation, require: different, attribute: organisation}
  - {name: one or two grades above, require: window, attribute: grade, min: 1, max: 2}
  - {name: same profession, score: same, attribute: profession, points: 10}
  - {name: shared characteristic, score: shared, attribute: characteristics, points: 6}
rule_sets:                        # a round may name one: the programme's rules, changed
  last-round:
    rules: [{name: still unmatched, score: unmatched, points: 6}]
max_open_relationships_per_mentee: 3   # the mentee quota (a profile's mentor_quota overrides it)
```

A `require` rule excludes the pairs that break it (mentor − mentee for a window); a
`score` rule adds `points` (on the 0–100 scale of the built-in criteria, negative for a
penalty) to the pairs it holds for. Every error names the rule it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# max_total: the largest total compatibility (a mentee whose only candidates are poor may
# stay unmatched). max_matched: as many mentees matched as possible, then the largest
# total compatibility among those assignments.
Objective = Literal["max_total", "max_matched"]
# senior: mentors should be `seniority_gap` levels above their mentees; peer: same level.
SeniorityMode = Literal["senior", "peer"]

CRITERIA: tuple[str, ...] = ("goals", "availability", "format", "language", "seniority", "preferences")

# A profile attribute's name: a code, so that it reads the same in CSV columns and JSON keys.
AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
# A rule's name: what explanations show ("same profession +10"), so no values, only a label.
RuleName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:()+-]*$")
]
# text: one value (organisation, profession); number: grade, years; set: several values
# (characteristics, interests).
AttributeKind = Literal["text", "number", "set"]
# same / different: the two values are equal / not equal (sets: equal / share nothing);
# shared: the two share a value (text: the same as `same`); window: mentor − mentee lies in
# [min, max]; unmatched (score only): the mentee has no mentor yet when the round runs.
Requirement = Literal["same", "different", "shared", "window"]
ScoreCondition = Literal["same", "different", "shared", "window", "unmatched"]


class CriterionWeights(BaseModel):
    """Relative weights of the criteria; a score is their weighted mean, 0–100."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goals: int = Field(default=40, ge=0, le=100)
    availability: int = Field(default=20, ge=0, le=100)
    format: int = Field(default=10, ge=0, le=100)
    language: int = Field(default=10, ge=0, le=100)
    seniority: int = Field(default=10, ge=0, le=100)
    preferences: int = Field(default=10, ge=0, le=100)

    @model_validator(mode="after")
    def _not_all_zero(self) -> CriterionWeights:
        if self.total == 0:
            raise ValueError("at least one criterion weight must be positive")
        return self

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in CRITERIA)


class AttributeSpec(BaseModel):
    """An attribute profiles may carry. Attributes are personal data and confidential unless
    the programme says otherwise (like free text in events, `events/sensitivity.py`): a
    confidential value is encrypted in the profile store, and never appears in explanations,
    which name rules only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AttributeKind = "text"
    confidential: bool = True


class MatchingRule(BaseModel):
    """One programme rule: a hard requirement (`require`) or a score term (`score`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: RuleName
    require: Requirement | None = None
    score: ScoreCondition | None = None
    attribute: AttributeName | None = None
    # window: bounds on mentor − mentee, inclusive; one may be left out.
    min: float | None = None
    max: float | None = None
    # score: points added on the 0–100 scale of the built-in criteria (negative: a penalty).
    points: int | None = Field(default=None, ge=-100, le=100)
    # require: a pair where either side lacks the attribute passes (allow) or not (exclude).
    missing: Literal["allow", "exclude"] = "allow"

    @model_validator(mode="after")
    def _one_kind(self) -> MatchingRule:
        def problem(text: str) -> ValueError:
            return ValueError(f"rule {self.name!r}: {text}")

        if (self.require is None) == (self.score is None):
            raise problem("give exactly one of require (a hard rule) or score (a score term)")
        condition = self.require or self.score
        if condition == "unmatched":
            if self.attribute is not None:
                raise problem("score: unmatched is about the mentee, it takes no attribute")
        elif self.attribute is None:
            raise problem(f"{condition} needs an attribute")
        if condition == "window":
            if self.min is None and self.max is None:
                raise problem("a window needs min, max or both")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise problem(f"min ({self.min:g}) is above max ({self.max:g})")
        elif self.min is not None or self.max is not None:
            raise problem("min and max belong to a window only")
        if self.score is not None:
            if self.points is None:
                raise problem("a score term needs points")
            if self.missing != "allow":
                raise problem("missing applies to require rules only")
        elif self.points is not None:
            raise problem("points belong to score terms; a require rule excludes pairs")
        return self

    @property
    def condition(self) -> str:
        return self.require or self.score or ""

    def describe(self) -> str:
        """The rule in words, without any profile's value (for explanations and docs)."""
        if self.condition == "window":
            low = "" if self.min is None else f"{self.min:g} ≤ "
            high = "" if self.max is None else f" ≤ {self.max:g}"
            return f"{low}mentor − mentee {self.attribute}{high}"
        if self.condition == "unmatched":
            return "mentee without a mentor yet"
        return f"{self.condition} {self.attribute}"


class RuleSet(BaseModel):
    """A round's own rules: the programme's rules without those named in `without`, plus
    `rules`; and, if given, its own `mentors_per_round`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[MatchingRule, ...] = ()
    without: tuple[RuleName, ...] = ()
    mentors_per_round: int | None = Field(default=None, ge=1, le=20)


def _check_rules(rules: tuple[MatchingRule, ...], attributes: Mapping[str, AttributeSpec], where: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"{where}rule {rule.name!r} is named twice; names must be unique")
        seen.add(rule.name)
        if rule.attribute is None:
            continue
        spec = attributes.get(rule.attribute)
        if spec is None:
            declared = ", ".join(sorted(attributes)) or "none"
            raise ValueError(f"{where}rule {rule.name!r}: attribute {rule.attribute!r} is not declared in "
                             f"attributes (declared: {declared})")  # fmt: skip
        if rule.condition == "window" and spec.kind != "number":
            raise ValueError(f"{where}rule {rule.name!r}: a window needs a number attribute; "
                             f"{rule.attribute!r} is {spec.kind}")  # fmt: skip
        if rule.condition == "shared" and spec.kind == "number":
            raise ValueError(f"{where}rule {rule.name!r}: shared needs a text or set attribute; {rule.attribute!r} is a number")


class MatchingSettings(BaseModel):
    """A programme's matching rules. Stored per programme; every field has a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: CriterionWeights = CriterionWeights()
    objective: Objective = "max_total"
    # Pairs scoring below this (0–100) are never proposed.
    min_score: float = Field(default=0, ge=0, le=100)
    # Weekly overlap that earns the full availability score.
    target_overlap_hours: float = Field(default=2, gt=0, le=168)
    # Hard constraints. Each applies only when both sides gave the information.
    min_overlap_hours: float = Field(default=0, ge=0, le=168)
    require_common_language: bool = True
    require_common_format: bool = False
    seniority_mode: SeniorityMode = "senior"
    seniority_gap: int = Field(default=2, ge=0, le=20)
    # Levels away from the wanted gap at which the seniority score reaches zero.
    seniority_tolerance: int = Field(default=3, ge=1, le=20)
    # A mentor must be at least this many levels above the mentee (None: no rule).
    min_seniority_gap: int | None = Field(default=None, ge=-20, le=20)
    # A mentee's quota: the open relationships (mentors) they may have in the programme at
    # once, however matched; a mentee profile's `mentor_quota` overrides it. The pool finds
    # nobody for, and a round leaves out, a mentee who has as many already.
    max_open_relationships_per_mentee: int = Field(default=1, ge=1, le=20)
    # How many mentors one round may give a mentee (never more than is left of the quota):
    # 1, like a round of mentor-match; 2 with a quota of 2 gives both mentors at once.
    mentors_per_round: int = Field(default=1, ge=1, le=20)
    # The programme's own attributes and rules (see the module's docstring).
    attributes: dict[AttributeName, AttributeSpec] = Field(default_factory=dict, max_length=100)
    rules: tuple[MatchingRule, ...] = Field(default=(), max_length=100)
    rule_sets: dict[RuleName, RuleSet] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="after")
    def _rules_fit_the_attributes(self) -> MatchingSettings:
        _check_rules(self.rules, self.attributes, "")
        names = {rule.name for rule in self.rules}
        for set_name, rule_set in self.rule_sets.items():
            where = f"rule set {set_name!r}: "
            unknown = [name for name in rule_set.without if name not in names]
            if unknown:
                raise ValueError(f"{where}without names no rule of the programme: {', '.join(map(repr, unknown))}")
            kept = tuple(rule for rule in self.rules if rule.name not in rule_set.without)
            _check_rules((*kept, *rule_set.rules), self.attributes, where)
        return self

    def for_round(self, rule_set: str | None) -> MatchingSettings:
        """The settings a round with `rule_set` (None: the programme's rules) runs with."""
        if rule_set is None:
            return self
        chosen = self.rule_sets.get(rule_set)
        if chosen is None:
            known = ", ".join(sorted(self.rule_sets)) or "none"
            raise KeyError(f"the programme has no rule set {rule_set!r} (rule sets: {known})")
        kept = tuple(rule for rule in self.rules if rule.name not in chosen.without)
        update: dict[str, object] = {"rules": (*kept, *chosen.rules), "rule_sets": {}}
        if chosen.mentors_per_round is not None:
            update["mentors_per_round"] = chosen.mentors_per_round
        return self.model_copy(update=update)

    @property
    def max_points(self) -> int:
        """The score of a perfect pair in points (scores are integers internally)."""
        return 1000 * self.weights.total

    def points_to_score(self, points: int) -> float:
        return round(100 * points / self.max_points, 1)

    def term_points(self, score_points: int) -> int:
        """A score term's points (0–100 scale) in integer points: exact, max_points is a multiple of 100."""
        return score_points * self.max_points // 100

    @property
    def min_points(self) -> int:
        # The smallest integer number of points whose score is at least min_score.
        return -(-int(round(self.min_score * 1000)) * self.max_points // 100_000)
