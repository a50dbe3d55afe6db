"""The scores of a cohort a few mentee rows at a time, fast enough to walk every pair of the
largest cohorts (100,000 × 25,000) more than once: never the whole matrix.

The same points as `pairing.scoring.score_matrix` to the point (tests/matching/test_matching_large.py),
computed differently. Apart from goals, every criterion and every rule depends on a small
code per profile (its availability pattern in the round's week, its set of formats, its
languages, its seniority, each rule attribute's value), so each is a small table indexed by
(mentee code, mentor code), built once from the distinct values:

- the tables are summed into a few *groups* (a group's codes are the distinct tuples of its
  criteria's codes on each side, as long as its table stays small); a pair's points are
  then the goals term plus one table look-up per group;
- a hard rule a pair breaks puts a large negative penalty into its table, so one
  comparison at the end decides whether a pair is allowed;
- goals are a float32 matrix product of priorities and levels (small integers: exact),
  turned into points through a table per goal weight (the integer division of the
  single-pair score, done once per possible value);
- preferences and the relational exclusions (same person, reporting line, previous pair,
  opt-out, pairs a caller excludes) are a few named pairs, applied where they fall.

Where a cohort has too many distinct values for small tables (say every profile its own
availability), a tile falls back to `pairing.scoring`'s block computation: just as exact,
slower, memory still bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from typing import Any

import numpy as np

from pairing.constraints import excluded_pairs
from pairing.profiles import MenteeProfile, MentorProfile
from pairing.rules import holds, value_of
from pairing.scoring import (
    BELOW_MINIMUM, FULL, GAP_TOO_SMALL, NO_COMMON_FORMAT, NO_COMMON_LANGUAGE, NOT_ALLOWED, TOO_LITTLE_TIME, UNKNOWN, _Cohort,
    _min_overlap_slots, _target_slots, _wanted_gap, asked_pairs, goal_matrices, weekly_slots,
)  # fmt: skip
from pairing.settings import MatchingRule, MatchingSettings

# Largest table of one group (entries), and of one side's codes of a group.
_TABLE_LIMIT = 1 << 22
_SIDE_LIMIT = 1 << 15
# Largest table of one criterion or rule (each entry judged once, in Python).
_FACTOR_LIMIT = 1 << 18


def _codes(values: Sequence[object]) -> tuple[np.ndarray, list[object]]:
    """Each value's code (index into the distinct values, in order of first appearance)."""
    found: dict[object, int] = {}
    codes = np.fromiter((found.setdefault(v, len(found)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(found)


# A factor: mentee codes, mentor codes and its table (int64 points; None where a hard rule breaks).
_Factor = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _factor(
    mentee_values: Sequence[object], mentor_values: Sequence[object], judge: Callable[[object, object], tuple[int, bool]]
) -> _Factor | None:
    """Codes of both sides and the table (points, passes) of one criterion or rule; None if
    its distinct values are too many for a table."""
    a, mentee_distinct = _codes(mentee_values)
    b, mentor_distinct = _codes(mentor_values)
    if len(mentee_distinct) * len(mentor_distinct) > _FACTOR_LIMIT:
        return None
    points = np.zeros((len(mentee_distinct), len(mentor_distinct)), dtype=np.int64)
    passes = np.ones(points.shape, dtype=bool)
    for x, ours in enumerate(mentee_distinct):
        for y, theirs in enumerate(mentor_distinct):
            points[x, y], passes[x, y] = judge(ours, theirs)
    return a, b, points, passes


def _rule_judge(rule: MatchingRule, points: int) -> Callable[[object, object], tuple[int, bool]]:
    """A rule on one pair of values, as `pairing.rules.judge_pair` judges it: (points, passes)."""

    def judge(a: object, b: object) -> tuple[int, bool]:
        if rule.condition == "unmatched":
            met = not a
        elif a is None or b is None:
            return 0, rule.require is None or rule.missing == "allow"
        else:
            met = holds(rule, a, b)  # type: ignore[arg-type]
        return (points if met else 0), (met or rule.require is None)

    return judge


def _named(mentees: np.ndarray, mentors: np.ndarray, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The named pairs (`mentees` sorted) that fall in `rows`: their row in the tile, and mentor."""
    if isinstance(rows, slice):
        first, last = np.searchsorted(mentees, [rows.start, rows.stop])
        return mentees[first:last] - rows.start, mentors[first:last]
    at = np.searchsorted(rows, mentees)
    inside = at < len(rows)
    inside[inside] = rows[at[inside]] == mentees[inside]
    return at[inside], mentors[inside]


class TileScorer:
    """`tile(rows)`: the points of mentees `rows` × every mentor, int32, NOT_ALLOWED (-1)
    where a pair may never be proposed — equal to those rows of `score_matrix`."""

    def __init__(
        self,
        mentees: Sequence[MenteeProfile],
        mentors: Sequence[MentorProfile],
        settings: MatchingSettings,
        week_of: date,
        *,
        has_mentor: Sequence[bool] | None = None,
        excluded: Iterable[tuple[int, int]] = (),
    ) -> None:
        self.shape = (len(mentees), len(mentors))
        self._settings = settings
        self._min_points = settings.min_points
        pairs = sorted(set(excluded_pairs(mentees, mentors)) | set(excluded))
        self._excluded_i = np.array([i for i, _ in pairs], dtype=np.int64)
        self._excluded_j = np.array([j for _, j in pairs], dtype=np.int64)
        self._groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._local = threading.local()
        self._dtype: type[np.signedinteger[Any]] = np.int64
        self._goal_table: np.ndarray = np.zeros(0, dtype=np.int64)
        self._goal_top = 0
        self._fallback: _Cohort | None = None
        self._hard_rules: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        if not mentees or not mentors:
            return
        flags = [False] * len(mentees) if has_mentor is None else list(has_mentor)
        factors = self._factors(mentees, mentors, settings, week_of, flags)
        if factors is None or not self._goals(mentees, mentors, settings):
            self._fallback = _Cohort(mentees, mentors, settings, week_of, flags)
            return
        self._preferences(mentees, mentors, settings)
        # The penalty of a broken hard rule: below anything an allowed pair can reach.
        highest = self._goal_top + sum(int(np.max(f[2], initial=0).clip(min=0)) for f in factors)
        highest += int(self._asked_points.sum(initial=0)) if len(self._asked_points) else 0
        self._lowest = -sum(int(-np.min(f[2], initial=0).clip(max=0)) for f in factors)
        self._penalty = highest - self._lowest + 1
        self._dtype = np.int32 if (len(factors) + 1) * self._penalty + highest < 2**31 else np.int64
        self._goal_table = self._goal_table.astype(self._dtype)
        self._build_groups(factors)
        # Where each hard rule holds, by the reason `pairing.scoring` gives (the factors come
        # in the order `_factors` lists them), for `exclusion_counts`.
        reasons = [TOO_LITTLE_TIME, NO_COMMON_FORMAT, NO_COMMON_LANGUAGE, GAP_TOO_SMALL,
                   *(f"rule {rule.name!r}" for rule in settings.rules)]  # fmt: skip
        self._hard_rules = [(reason, f[0], f[1], f[3]) for reason, f in zip(reasons, factors, strict=True)]

    # -- building the tables ----------------------------------------------------------------

    def _factors(
        self, mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile], settings: MatchingSettings,
        week_of: date, has_mentor: list[bool],
    ) -> list[_Factor] | None:  # fmt: skip
        weights, found = settings.weights, []
        target, min_overlap = _target_slots(settings), _min_overlap_slots(settings)

        def availability(a: object, b: object) -> tuple[int, bool]:
            assert isinstance(a, tuple) and isinstance(b, tuple)
            if not (a[0] and b[0]):
                return weights.availability * UNKNOWN, True
            overlap = (a[1] & b[1]).bit_count()
            return weights.availability * (FULL * min(overlap, target) // target), overlap >= min_overlap

        def shared(weight: int, required: bool) -> Callable[[object, object], tuple[int, bool]]:
            def judge(a: object, b: object) -> tuple[int, bool]:
                assert isinstance(a, frozenset) and isinstance(b, frozenset)
                if not (a and b):
                    return weight * UNKNOWN, True
                return weight * (FULL if a & b else 0), bool(a & b) or not required

            return judge

        wanted, tolerance, min_gap = _wanted_gap(settings), settings.seniority_tolerance, settings.min_seniority_gap

        def seniority(a: object, b: object) -> tuple[int, bool]:
            if a is None or b is None:
                return weights.seniority * UNKNOWN, True
            assert isinstance(a, int) and isinstance(b, int)
            gap = b - a
            points = FULL * max(0, tolerance - abs(gap - wanted)) // tolerance
            return weights.seniority * points, min_gap is None or gap >= min_gap

        slots = [[(bool(p.availability), weekly_slots(p, week_of)) for p in side] for side in (mentees, mentors)]
        specs: list[tuple[Sequence[object], Sequence[object], Callable[[object, object], tuple[int, bool]]]] = [
            (slots[0], slots[1], availability),
            ([frozenset(p.formats) for p in mentees], [frozenset(p.formats) for p in mentors],
             shared(weights.format, settings.require_common_format)),
            ([frozenset(p.languages) for p in mentees], [frozenset(p.languages) for p in mentors],
             shared(weights.language, settings.require_common_language)),
            ([p.seniority for p in mentees], [p.seniority for p in mentors], seniority),
        ]  # fmt: skip
        for rule in settings.rules:
            judge_rule = _rule_judge(rule, settings.term_points(rule.points or 0) if rule.score is not None else 0)
            if rule.condition == "unmatched":
                specs.append((has_mentor, [None] * len(mentors), judge_rule))
            else:
                specs.append(([value_of(p, rule, settings) for p in mentees], [value_of(p, rule, settings) for p in mentors],
                              judge_rule))  # fmt: skip
        for ours, theirs, judge in specs:
            if (factor := _factor(ours, theirs, judge)) is None:
                return None
            found.append(factor)
        return found

    def _build_groups(self, factors: list[_Factor]) -> None:
        """Sum the factors into as few tables as stay small: each group's codes are the
        distinct tuples of its factors' codes."""
        pending = sorted(factors, key=lambda f: f[2].size)
        while pending:
            chosen = [pending.pop(0)]
            while pending:
                trial = [*chosen, pending[0]]
                a = np.unique(np.stack([f[0] for f in trial], axis=1), axis=0)
                b = np.unique(np.stack([f[1] for f in trial], axis=1), axis=0)
                if len(a) * len(b) > _TABLE_LIMIT or len(b) > _SIDE_LIMIT:
                    break
                chosen.append(pending.pop(0))
            self._groups.append(self._group(chosen))

    def _group(self, factors: list[_Factor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a_tuples, a = np.unique(np.stack([f[0] for f in factors], axis=1), axis=0, return_inverse=True)
        b_tuples, b = np.unique(np.stack([f[1] for f in factors], axis=1), axis=0, return_inverse=True)
        table = np.zeros((len(a_tuples), len(b_tuples)), dtype=np.int64)
        broken = np.zeros(table.shape, dtype=bool)
        for k, (_, _, points, passes) in enumerate(factors):
            rows, columns = a_tuples[:, k][:, None], b_tuples[:, k][None, :]
            table += points[rows, columns]
            broken |= ~passes[rows, columns]
        table[broken] = -self._penalty
        # Flat indices: the mentee's code times the row length, plus the mentor's code.
        return a.ravel() * len(b_tuples), b.ravel(), table.ravel().astype(self._dtype)

    def _goals(self, mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile], settings: MatchingSettings) -> bool:
        """The goals term's arrays; False if its products would not be exact in float32."""
        priority, level = goal_matrices(mentees, mentors)
        self._priority = priority.astype(np.float32)
        level = level.astype(np.float32)
        weight = (5 * self._priority.sum(axis=1)).astype(np.int64)
        # covered = Σ priority × level ≤ 5 Σ priority = weight (levels are 1–5).
        distinct, code = np.unique(weight, return_inverse=True)
        self._covered_stride = int(distinct.max()) + 1
        covered = np.arange(self._covered_stride)
        table = np.where(distinct[:, None] > 0, FULL * covered[None, :] // np.maximum(distinct[:, None], 1), 0)
        self._goal_table = (settings.weights.goals * table).ravel()
        # One more column: the product gives covered + the row's offset into the table.
        offset = code.ravel() * self._covered_stride
        if offset.max(initial=0) + self._covered_stride >= 2**24:
            return False
        self._priority = np.concatenate([self._priority, offset[:, None].astype(np.float32)], axis=1)
        self._level_t = np.ascontiguousarray(np.concatenate([level, np.ones((len(mentors), 1), np.float32)], axis=1).T)
        self._goal_top = int(self._goal_table.max(initial=0))
        return True

    def _preferences(self, mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile], settings: MatchingSettings) -> None:
        self._asked_i, self._asked_j = asked_pairs(mentees, mentors)
        # The most one pair can get from being asked for (both ways).
        self._asked_points = np.array([2 * UNKNOWN * settings.weights.preferences] if len(self._asked_i) else [],
                                      dtype=np.int64)  # fmt: skip

    # -- a tile -------------------------------------------------------------------------------

    def tile(self, rows: slice | np.ndarray) -> np.ndarray:
        """Mentees `rows`: a slice, or sorted indices (a certificate walks a few rows again)."""
        n, m = self.shape
        if isinstance(rows, slice):
            rows = slice(rows.start or 0, min(n, rows.stop))
        if self._fallback is not None:
            if not isinstance(rows, slice):
                # The block computation takes runs of consecutive mentees.
                runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
                return np.concatenate([self.tile(slice(int(r[0]), int(r[-1]) + 1)) for r in runs if len(r)]
                                      or [np.zeros((0, m), np.int32)])  # fmt: skip
            total, passes = self._fallback.block(rows)
            allowed = total >= self._min_points
            for _, ok in passes:
                allowed &= ok
            result = np.where(allowed, total, NOT_ALLOWED).astype(np.int32)
        else:
            result = self._fast(rows)
        at, j = _named(self._excluded_i, self._excluded_j, rows)
        result[at, j] = NOT_ALLOWED
        return result

    def _buffers(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Work arrays of this thread for `count` rows, reused from tile to tile (fresh
        arrays of megabytes cost page faults every time)."""
        held = getattr(self._local, "buffers", None)
        if held is None or held[0].shape[0] != count:
            shape = (count, self.shape[1])
            held = (np.empty(shape, np.float32), np.empty(shape, np.int64), np.empty(shape, self._dtype),
                    np.empty(shape, self._dtype))  # fmt: skip
            self._local.buffers = held
        return held

    def exclusion_counts(self) -> list[tuple[str, np.ndarray]] | None:
        """For every mentee, how many mentors each hard rule rules out, as
        `pairing.scoring.exclusion_counts` names and counts them (the relational exclusions
        and the `excluded` pairs aside): from the tables, with one pass over the pairs only
        for a score minimum. None on the block path."""
        if self._fallback is not None:
            return None
        n, m = self.shape
        # A table row's count is the mentors of each code it fails, summed: no pair is looked at.
        found = [(reason, ((~passes).astype(np.int64) @ np.bincount(b, minlength=passes.shape[1]))[a])
                 for reason, a, b, passes in self._hard_rules]  # fmt: skip
        if self._min_points > 0 and n and m:
            below, step = np.zeros(n, dtype=np.int64), max(1, (1 << 19) // m)
            for start in range(0, n, step):
                raw = self._raw(slice(start, min(n, start + step)))
                # The minimum counts only mentors that no other rule rules out.
                below[start : start + step] = ((raw >= self._lowest) & (raw < self._min_points)).sum(axis=1)
            found.append((BELOW_MINIMUM, below))
        return found

    def _fast(self, rows: slice | np.ndarray) -> np.ndarray:
        raw = self._raw(rows)
        # A broken hard rule left raw below the lowest points an allowed pair can have.
        if self._min_points > 0:
            result: np.ndarray = np.where(raw >= self._min_points, raw, NOT_ALLOWED)
        elif self._lowest == 0:
            result = np.maximum(raw, NOT_ALLOWED)
        else:
            result = np.where(raw >= self._lowest, np.maximum(raw, 0), NOT_ALLOWED)
        return result.astype(np.int32, copy=False)

    def _raw(self, rows: slice | np.ndarray) -> np.ndarray:
        """Points before the hard rules (below `_lowest` where one breaks): this thread's
        work array, overwritten by its next tile."""
        count = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        product, index, raw, looked_up = self._buffers(count)
        np.matmul(self._priority[rows], self._level_t, out=product)
        np.copyto(index, product, casting="unsafe")  # exact small integers: covered + the row's offset
        np.take(self._goal_table, index, out=raw, mode="wrap")
        for a, b, table in self._groups:
            np.add(a[rows, None], b[None, :], out=index)
            np.take(table, index, out=looked_up, mode="wrap")
            raw += looked_up
        at, j = _named(self._asked_i, self._asked_j, rows)
        if len(at):
            np.add.at(raw, (at, j), UNKNOWN * self._settings.weights.preferences)
        return raw
