"""Compatibility scores with reasons.

A pair's score is the weighted mean of six criteria, each judged from 0 to 1000 points
with integer arithmetic (so the single-pair path and the whole-cohort path agree to the
point, and the solver works on exact integers):

- goals: how well the mentor's strengths cover the mentee's goals, each goal weighted by
  its priority and covered by the mentor's level in it (level 5 covers it fully);
- availability: weekly overlap of both sides' windows, compared in UTC for the week the
  round runs in (so time zones and daylight saving are honoured), full at the programme's
  target overlap;
- format, language: whether they share a meeting format / a language;
- seniority: how close the seniority gap is to the one the programme wants (a few levels
  for senior mentoring, none for peer mentoring);
- preferences: whether either side asked for the other.

A criterion neither side (or only one side) gave information for scores 500: unknown is
neither good nor bad. Explanations carry ids and topics only, never names: they are
written into workflow history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict

from pairing.constraints import excluded_pairs, exclusion_reason
from pairing.profiles import WEEKDAYS, AvailabilityWindow, MenteeProfile, MentorProfile, Profile
from pairing.rules import BROKEN, RuleColumns, judge_pair
from pairing.settings import CRITERIA, MatchingSettings

SLOT_MINUTES = 15
SLOTS_PER_WEEK = 7 * 24 * 60 // SLOT_MINUTES
FULL = 1000
UNKNOWN = 500
NOT_ALLOWED = -1
_MAX_TOPICS_EXPLAINED = 8


class PairScore(BaseModel):
    """The score of one mentee–mentor pair and why."""

    model_config = ConfigDict(frozen=True)

    mentee_id: str
    mentor_id: str
    # Integer points (0 … settings.max_points, more with score terms), what the solver optimises.
    points: int
    # The same on a 0–100 scale, for people (above 100 with score terms).
    score: float
    criteria: dict[str, int]
    explanation: str
    # Why the pair may never be proposed (then points are still reported).
    excluded: str | None = None
    # The programme's rules, by name: "met", "broken" or "not applied: …" (no values).
    rules: dict[str, str] = {}
    # The score terms that added (or took away) points, by name, on the 0–100 scale.
    terms: dict[str, int] = {}


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


@lru_cache(maxsize=65536)
def _window_slots(window: AvailabilityWindow, timezone: str, monday: date) -> int:
    zone = ZoneInfo(timezone)
    local_day = monday + timedelta(days=WEEKDAYS.index(window.day))
    start_minute = window.start_minute
    local = datetime.combine(local_day, time(start_minute // 60, start_minute % 60), tzinfo=zone)
    week_start = datetime.combine(monday, time(0), tzinfo=UTC)
    start = int((local.astimezone(UTC) - week_start).total_seconds() // 60)
    # Only whole slots inside the window count: availability is never overstated.
    first = -(-start // SLOT_MINUTES)
    end = (start + window.length_minutes) // SLOT_MINUTES
    mask = 0
    for slot in range(first, end):
        mask |= 1 << (slot % SLOTS_PER_WEEK)
    return mask


def weekly_slots(profile: Profile, week_of: date) -> int:
    """The profile's availability as a bit mask of 15-minute UTC slots of the week of `week_of`."""
    monday = monday_of(week_of)
    mask = 0
    for window in profile.availability:
        mask |= _window_slots(window, profile.timezone, monday)
    return mask


def _target_slots(settings: MatchingSettings) -> int:
    return max(1, round(settings.target_overlap_hours * 60 / SLOT_MINUTES))


def _min_overlap_slots(settings: MatchingSettings) -> int:
    return -(-round(settings.min_overlap_hours * 60) // SLOT_MINUTES)


def _wanted_gap(settings: MatchingSettings) -> int:
    return settings.seniority_gap if settings.seniority_mode == "senior" else 0


def score_pair(
    mentee: MenteeProfile,
    mentor: MentorProfile,
    settings: MatchingSettings,
    week_of: date,
    *,
    mentee_slots: int | None = None,
    mentor_slots: int | None = None,
    has_mentor: bool = False,
) -> PairScore:
    """Score and explain one pair (slot masks may be passed in when scoring many pairs).
    `has_mentor`: the mentee has a mentor already (for `unmatched` score terms)."""
    criteria: dict[str, int] = {}
    reasons: list[str] = []
    excluded = exclusion_reason(mentee, mentor)

    # goals
    shared = [(goal, mentor.level_in(goal.topic)) for goal in mentee.goals]
    covered = [(goal, level) for goal, level in shared if level > 0]
    weight = 5 * sum(goal.priority for goal in mentee.goals)
    criteria["goals"] = FULL * sum(goal.priority * level for goal, level in shared) // weight if weight else 0
    if not mentee.goals:
        reasons.append("no goals given")
    elif not covered:
        reasons.append(f"shares none of {len(mentee.goals)} goals")
    else:
        topics = [goal.topic for goal, _ in covered]
        listed = ", ".join(topics[:_MAX_TOPICS_EXPLAINED])
        if len(topics) > _MAX_TOPICS_EXPLAINED:
            listed += f" and {len(topics) - _MAX_TOPICS_EXPLAINED} more"
        reasons.append(f"shares {len(covered)} of {len(mentee.goals)} goals: {listed}")

    # availability
    if mentee.availability and mentor.availability:
        a = weekly_slots(mentee, week_of) if mentee_slots is None else mentee_slots
        b = weekly_slots(mentor, week_of) if mentor_slots is None else mentor_slots
        overlap = (a & b).bit_count()
        target = _target_slots(settings)
        criteria["availability"] = FULL * min(overlap, target) // target
        reasons.append(f"{_hours(overlap)} h/week overlap" if overlap else "no common time in the week")
        if excluded is None and overlap < _min_overlap_slots(settings):
            excluded = "too little common time"
    else:
        criteria["availability"] = UNKNOWN
        reasons.append("availability not given")

    # format
    if mentee.formats and mentor.formats:
        common = sorted(set(mentee.formats) & set(mentor.formats))
        criteria["format"] = FULL if common else 0
        reasons.append("meets by " + " or ".join(f.replace("_", " ") for f in common) if common else "no common meeting format")
        if excluded is None and not common and settings.require_common_format:
            excluded = "no common meeting format"
    else:
        criteria["format"] = UNKNOWN

    # language
    if mentee.languages and mentor.languages:
        languages = sorted(set(mentee.languages) & set(mentor.languages))
        criteria["language"] = FULL if languages else 0
        reasons.append(f"common language: {', '.join(languages)}" if languages else "no common language")
        if excluded is None and not languages and settings.require_common_language:
            excluded = "no common language"
    else:
        criteria["language"] = UNKNOWN

    # seniority
    if mentee.seniority is not None and mentor.seniority is not None:
        gap = mentor.seniority - mentee.seniority
        distance = abs(gap - _wanted_gap(settings))
        tolerance = settings.seniority_tolerance
        criteria["seniority"] = FULL * max(0, tolerance - distance) // tolerance
        reasons.append(_describe_gap(gap))
        if excluded is None and settings.min_seniority_gap is not None and gap < settings.min_seniority_gap:
            excluded = "seniority gap too small"
    else:
        criteria["seniority"] = UNKNOWN

    # preferences
    mentee_asked = mentor.participant_id in mentee.preferred
    mentor_asked = mentee.participant_id in mentor.preferred
    criteria["preferences"] = UNKNOWN * mentee_asked + UNKNOWN * mentor_asked
    if mentee_asked and mentor_asked:
        reasons.append("both asked for each other")
    elif mentee_asked:
        reasons.append("mentee asked for this mentor")
    elif mentor_asked:
        reasons.append("mentor asked for this mentee")

    # the programme's own rules: requirements, then score terms
    outcomes = judge_pair(mentee, mentor, settings, has_mentor=has_mentor)
    for outcome in outcomes:
        if excluded is None and outcome.rule.require is not None and outcome.outcome == BROKEN:
            excluded = f"rule {outcome.rule.name!r}"
    terms = {o.rule.name: o.rule.points or 0 for o in outcomes if o.rule.score is not None and o.points}
    reasons.extend(f"{name} {points:+d}" for name, points in terms.items())

    base = sum(getattr(settings.weights, name) * criteria[name] for name in CRITERIA)
    points = max(0, base + sum(o.points for o in outcomes))
    if excluded is None and points < settings.min_points:
        excluded = "score below the programme's minimum"
    score = settings.points_to_score(points)
    explanation = f"score {score:g}/100: " + "; ".join(reasons)
    return PairScore(
        mentee_id=mentee.participant_id,
        mentor_id=mentor.participant_id,
        points=points,
        score=score,
        criteria=criteria,
        explanation=explanation[:2000],
        excluded=excluded,
        rules={o.rule.name: o.outcome for o in outcomes},
        terms=terms,
    )


def _hours(slots: int) -> str:
    return f"{slots * SLOT_MINUTES / 60:g}"


def _describe_gap(gap: int) -> str:
    if gap == 0:
        return "same seniority level"
    levels = "level" if abs(gap) == 1 else "levels"
    return f"mentor {abs(gap)} {levels} {'more' if gap > 0 else 'less'} senior"


# -- a whole cohort at once --------------------------------------------------------------


def _slot_matrix(profiles: Sequence[Profile], week_of: date) -> np.ndarray:
    matrix = np.zeros((len(profiles), SLOTS_PER_WEEK), dtype=np.float32)
    for row, profile in enumerate(profiles):
        mask = weekly_slots(profile, week_of)
        if mask:
            bits = np.frombuffer(mask.to_bytes(SLOTS_PER_WEEK // 8, "little"), dtype=np.uint8)
            matrix[row] = np.unpackbits(bits, bitorder="little")
    return matrix


def _membership(values: Sequence[Sequence[str]], vocabulary: dict[str, int]) -> np.ndarray:
    matrix = np.zeros((len(values), max(1, len(vocabulary))), dtype=np.float32)
    for row, items in enumerate(values):
        for item in items:
            matrix[row, vocabulary[item]] = 1
    return matrix


# Reasons a pair is never proposed, as score_pair names them (rules: "rule 'NAME'").
TOO_LITTLE_TIME = "too little common time"
NO_COMMON_FORMAT = "no common meeting format"
NO_COMMON_LANGUAGE = "no common language"
GAP_TOO_SMALL = "seniority gap too small"
BELOW_MINIMUM = "score below the programme's minimum"


def goal_matrices(mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile]) -> tuple[np.ndarray, np.ndarray]:
    """(priority: mentees × topics, level: mentors × topics) over the topics mentees want."""
    topics = {t: k for k, t in enumerate(sorted({g.topic for p in mentees for g in p.goals}))}
    priority = np.zeros((len(mentees), max(1, len(topics))), dtype=np.float64)
    for i, mentee in enumerate(mentees):
        for goal in mentee.goals:
            priority[i, topics[goal.topic]] = goal.priority
    level = np.zeros((len(mentors), priority.shape[1]), dtype=np.float64)
    for j, mentor in enumerate(mentors):
        for strength in mentor.strengths:
            if (k := topics.get(strength.topic)) is not None:
                level[j, k] = strength.level
    return priority, level


def asked_pairs(mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile]) -> tuple[np.ndarray, np.ndarray]:
    """Preferences are a few named ids per profile: (mentee, mentor) of each ask, sorted by
    mentee so that a block finds its own with a binary search (a pair asked both ways twice)."""
    mentor_index = {p.participant_id: j for j, p in enumerate(mentors)}
    mentee_index = {p.participant_id: i for i, p in enumerate(mentees)}
    asked = [(i, mentor_index[x]) for i, p in enumerate(mentees) for x in p.preferred if x in mentor_index]
    asked += [(mentee_index[x], j) for j, p in enumerate(mentors) for x in p.preferred if x in mentee_index]
    asked.sort()
    return np.array([i for i, _ in asked], dtype=np.int64), np.array([j for _, j in asked], dtype=np.int64)


class _Cohort:
    """Everything about a cohort that the blocks of the score matrix share, encoded once."""

    def __init__(
        self,
        mentees: Sequence[MenteeProfile],
        mentors: Sequence[MentorProfile],
        settings: MatchingSettings,
        week_of: date,
        has_mentor: Sequence[bool] | None,
    ) -> None:
        self.settings = settings
        n, m = len(mentees), len(mentors)
        self.shape = (n, m)
        self.priority, self.level = goal_matrices(mentees, mentors)
        self.goal_weight = (5 * self.priority.sum(axis=1)).astype(np.int64)

        self.mentee_slots, self.mentor_slots = _slot_matrix(mentees, week_of), _slot_matrix(mentors, week_of)
        self.mentee_has_slots = np.array([bool(p.availability) for p in mentees], dtype=bool)
        self.mentor_has_slots = np.array([bool(p.availability) for p in mentors], dtype=bool)

        formats: dict[str, int] = {f: k for k, f in enumerate(sorted({f for p in (*mentees, *mentors) for f in p.formats}))}
        self.mentee_formats = _membership([p.formats for p in mentees], formats)
        self.mentor_formats = _membership([p.formats for p in mentors], formats)
        languages = {x: k for k, x in enumerate(sorted({x for p in (*mentees, *mentors) for x in p.languages}))}
        self.mentee_languages = _membership([p.languages for p in mentees], languages)
        self.mentor_languages = _membership([p.languages for p in mentors], languages)

        self.mentee_level = np.array([p.seniority if p.seniority is not None else -1 for p in mentees], dtype=np.int64)
        self.mentor_level = np.array([p.seniority if p.seniority is not None else -1 for p in mentors], dtype=np.int64)
        self.rules = RuleColumns(mentees, mentors, settings, has_mentor) if settings.rules else None

        self.asked_i, self.asked_j = asked_pairs(mentees, mentors)

    def block(self, rows: slice) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
        """Points of the block's pairs before any hard rule (int64), and each hard rule's
        reason with where the block passes it (bool, broadcastable to the block)."""
        settings, weights = self.settings, self.settings.weights
        passes: list[tuple[str, np.ndarray]] = []

        covered = np.rint(self.priority[rows] @ self.level.T).astype(np.int64)
        gw = self.goal_weight[rows][:, None]
        total = weights.goals * np.where(gw > 0, FULL * covered // np.maximum(gw, 1), 0)

        overlap = np.rint(self.mentee_slots[rows] @ self.mentor_slots.T).astype(np.int64)
        both = self.mentee_has_slots[rows][:, None] & self.mentor_has_slots[None, :]
        target = _target_slots(settings)
        total += weights.availability * np.where(both, FULL * np.minimum(overlap, target) // target, UNKNOWN)
        if (min_overlap := _min_overlap_slots(settings)) > 0:
            passes.append((TOO_LITTLE_TIME, ~both | (overlap >= min_overlap)))

        for reason, ours, theirs, weight, required in (
            (NO_COMMON_FORMAT, self.mentee_formats, self.mentor_formats, weights.format, settings.require_common_format),
            (NO_COMMON_LANGUAGE, self.mentee_languages, self.mentor_languages, weights.language,
             settings.require_common_language),
        ):  # fmt: skip
            common = (ours[rows] @ theirs.T) > 0
            both = np.asarray(ours[rows].any(axis=1))[:, None] & np.asarray(theirs.any(axis=1))[None, :]
            total += weight * np.where(both, np.where(common, FULL, 0), UNKNOWN)
            if required:
                passes.append((reason, ~both | common))

        gap = self.mentor_level[None, :] - self.mentee_level[rows][:, None]
        both = (self.mentee_level[rows] >= 0)[:, None] & (self.mentor_level >= 0)[None, :]
        tolerance = settings.seniority_tolerance
        seniority = FULL * np.maximum(0, tolerance - np.abs(gap - _wanted_gap(settings))) // tolerance
        total += weights.seniority * np.where(both, seniority, UNKNOWN)
        if settings.min_seniority_gap is not None:
            passes.append((GAP_TOO_SMALL, ~both | (gap >= settings.min_seniority_gap)))

        if self.rules is not None:
            for rule in settings.rules:
                held, known = self.rules.judge(rule, rows)
                if rule.require is not None:
                    ok = held & known
                    passes.append((f"rule {rule.name!r}", ok | ~known if rule.missing == "allow" else ok))
                elif rule.points:
                    total += settings.term_points(rule.points) * (held & known)

        first, last = np.searchsorted(self.asked_i, [rows.start, rows.stop])
        if last > first:
            np.add.at(total, (self.asked_i[first:last] - rows.start, self.asked_j[first:last]), UNKNOWN * weights.preferences)
        return np.maximum(total, 0), passes


def _blocks(
    mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile], settings: MatchingSettings, week_of: date,
    has_mentor: Sequence[bool] | None, block_rows: int,
) -> Iterator[tuple[slice, np.ndarray, list[tuple[str, np.ndarray]]]]:  # fmt: skip
    """The cohort a block of mentees at a time (bounded memory): rows, points, hard rules."""
    if not mentees or not mentors:
        return
    cohort = _Cohort(mentees, mentors, settings, week_of, has_mentor)
    for start in range(0, len(mentees), block_rows):
        rows = slice(start, min(len(mentees), start + block_rows))
        yield rows, *cohort.block(rows)


def score_matrix(
    mentees: Sequence[MenteeProfile],
    mentors: Sequence[MentorProfile],
    settings: MatchingSettings,
    week_of: date,
    *,
    has_mentor: Sequence[bool] | None = None,
    block_rows: int = 1024,
) -> np.ndarray:
    """Points of every pair as an int32 matrix (mentees × mentors), NOT_ALLOWED (-1) for
    pairs that may never be proposed. Equal to `score_pair(...).points` for every allowed
    pair; computed a block of mentees at a time to bound memory. `has_mentor[i]`: mentee i
    has a mentor already (for `unmatched` score terms; default: nobody has)."""
    result = np.empty((len(mentees), len(mentors)), dtype=np.int32)
    for rows, total, passes in _blocks(mentees, mentors, settings, week_of, has_mentor, block_rows):
        allowed = total >= settings.min_points
        for _, ok in passes:
            allowed &= ok
        result[rows] = np.where(allowed, total, NOT_ALLOWED)
    for i, j in excluded_pairs(mentees, mentors):
        result[i, j] = NOT_ALLOWED
    return result


def exclusion_counts(
    mentees: Sequence[MenteeProfile],
    mentors: Sequence[MentorProfile],
    settings: MatchingSettings,
    week_of: date,
    *,
    has_mentor: Sequence[bool] | None = None,
    block_rows: int = 1024,
) -> list[dict[str, int]]:
    """For each mentee, how many of `mentors` each reason rules out (a mentor ruled out by two
    reasons counts under both): why a mentee was left unmatched, in aggregate. The score
    minimum counts only mentors that no other reason rules out."""
    counts: list[dict[str, int]] = [{} for _ in mentees]
    for rows, total, passes in _blocks(mentees, mentors, settings, week_of, has_mentor, block_rows):
        start, shape = rows.start, total.shape
        everything = np.ones(shape, dtype=bool)
        for reason, ok in passes:
            ok = np.broadcast_to(ok, shape)
            everything &= ok
            for offset, excluded in enumerate((~ok).sum(axis=1).tolist()):
                if excluded:
                    counts[start + offset][reason] = counts[start + offset].get(reason, 0) + excluded
        below = everything & (total < settings.min_points)
        for offset, excluded in enumerate(below.sum(axis=1).tolist()):
            if excluded:
                counts[start + offset][BELOW_MINIMUM] = excluded
    for i, j in set(excluded_pairs(mentees, mentors)):
        if (relational := exclusion_reason(mentees[i], mentors[j])) is not None:
            counts[i][relational] = counts[i].get(relational, 0) + 1
    return counts
