"""The scores of a cohort a few mentee rows at a time, fast enough to walk every pair of the
largest cohorts (100,000 × 25,000) more than once: never the whole matrix.

The same points as `pairing.scoring.score_matrix` to the point (tests/matching/test_matching_large.py),
computed differently. Apart from goals, every criterion and every rule depends on a small
code per profile (its availability pattern in the round's week, its set of formats, its
languages, its seniority, each rule attribute's value), so each is a small table indexed by
(mentee code, mentor code), built once from the distinct values:

- the tables are summed into a few *groups* (a group's codes are the distinct tuples of its
  criteria's codes on each side, as long as its table stays small); a pair's points are
  then the goals term plus one table entry per group. Where it fits in memory, each group
  is kept expanded, one row over every mentor per mentee code (at 100,000 × 25,000: 1,004
  rows, 100 MB), so that a tile copies whole rows instead of looking each pair up;
- a hard rule a pair breaks puts a large negative penalty into its table, so one
  comparison at the end decides whether a pair is allowed;
- goals: the sum of a mentee's few rows of FULL × priority × levels (one row per distinct
  topic and priority; a float32 matrix product of priorities and levels where mentees name
  many goals), divided by the mentee's weight in float32 and truncated — exactly the
  integer division of the single-pair score (see `_goals`);
- a tile is computed a few rows at a time (`_CHUNK_PAIRS`), so that its work arrays stay
  in a core's cache: about 3 ns a pair on one core here, from 7;
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
# Bytes of rows expanded over every mentor (a group's table row per mentee code, each
# goal's priority × levels): a tile then gathers whole rows instead of looking up each pair.
_EXPANDED_LIMIT = 1 << 28
# Most goals of one mentee for which their rows are gathered; above, a matrix product.
_GATHERED_GOALS = 6
# Pairs scored at a time inside a tile: the work arrays of a few rows stay in a core's cache
# (at 25,000 mentors, 20 rows of float32 are 2 MB, all of a core's L2 here; each pass over
# them then costs about twice what it costs over 2 rows).
_CHUNK_PAIRS = 1 << 16


def _codes(values: Sequence[object]) -> tuple[np.ndarray, list[object]]:
    """Each value's code (index into the distinct values, in order of first appearance)."""
    found: dict[object, int] = {}
    codes = np.fromiter((found.setdefault(v, len(found)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(found)


# A factor: mentee codes, mentor codes and its table (int64 points; None where a hard rule breaks).
_Factor = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
# A group: its code of each mentee, then either each code's row over every mentor and None,
# or the flat table (the code is then its row's offset) and each mentor's code.
_Group = tuple[np.ndarray, np.ndarray, np.ndarray | None]


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


def _distinct_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(codes, axis=0, return_inverse=True)` of small non-negative integers (rows
    in the same order), through one int64 key a row: a sort of whole rows compares them as
    bytes, ten times slower (a second of building the scorer at 100,000 × 25,000)."""
    spans = codes.max(axis=0, initial=0).astype(np.int64) + 1
    if float(np.prod(spans.astype(np.float64))) >= 2**62:
        found, inverse = np.unique(codes, axis=0, return_inverse=True)
        return found, inverse.ravel()
    key = np.zeros(len(codes), dtype=np.int64)
    for k in range(codes.shape[1]):  # the first column the most significant: the same order
        key = key * spans[k] + codes[:, k]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return codes[first], inverse.ravel()


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
        self._groups: list[_Group] = []
        self._expanded_bytes = 0
        self._local = threading.local()
        self._dtype: type[np.signedinteger[Any]] = np.int64
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
                a = _distinct_rows(np.stack([f[0] for f in trial], axis=1))[0]
                b = _distinct_rows(np.stack([f[1] for f in trial], axis=1))[0]
                if len(a) * len(b) > _TABLE_LIMIT or len(b) > _SIDE_LIMIT:
                    break
                chosen.append(pending.pop(0))
            self._groups.append(self._group(chosen))

    def _group(self, factors: list[_Factor]) -> _Group:
        a_tuples, a = _distinct_rows(np.stack([f[0] for f in factors], axis=1))
        b_tuples, b = _distinct_rows(np.stack([f[1] for f in factors], axis=1))
        table = np.zeros((len(a_tuples), len(b_tuples)), dtype=np.int64)
        broken = np.zeros(table.shape, dtype=bool)
        for k, (_, _, points, passes) in enumerate(factors):
            rows, columns = a_tuples[:, k][:, None], b_tuples[:, k][None, :]
            table += points[rows, columns]
            broken |= ~passes[rows, columns]
        table[broken] = -self._penalty
        table = table.astype(self._dtype)
        # Each mentee code's row over every mentor, where they fit: a tile copies whole rows
        # (0.2 ns a pair) instead of computing a flat index and looking each pair up (0.9 ns).
        size = len(a_tuples) * self.shape[1] * table.itemsize
        if self._expanded_bytes + size <= _EXPANDED_LIMIT:
            self._expanded_bytes += size
            return a.ravel(), np.ascontiguousarray(table[:, b.ravel()]), None
        # Flat indices: the mentee's code times the row length, plus the mentor's code.
        return a.ravel() * len(b_tuples), table.ravel(), b.ravel()

    def _goals(self, mentees: Sequence[MenteeProfile], mentors: Sequence[MentorProfile], settings: MatchingSettings) -> bool:
        """The goals term's arrays; False if its sums would not be exact in float32.

        A pair's goal points are weights.goals × ⌊FULL × covered / weight⌋ with covered =
        Σ priority × level ≤ weight = 5 Σ priority (levels are 1–5). FULL × covered is summed
        in float32 (integers below 2²⁴: exact) and divided by the mentee's weight: a
        correctly rounded quotient of integers below 2²⁴ lies on the same side of every
        integer as the true one (a fraction is at least 1/weight from the next integer, the
        rounding less), so truncating it is the floor, as the single-pair score divides."""
        priority, level = goal_matrices(mentees, mentors)
        weight = 5 * priority.sum(axis=1)
        if FULL * weight.max(initial=0) >= 2**24:
            return False
        self._goal_weight = np.maximum(weight, 1).astype(np.float32)
        self._goal_points = settings.weights.goals
        self._goal_top = settings.weights.goals * FULL if (weight > 0).any() else 0
        m = len(mentors)
        # Mentees name a few goals: the sum of a few gathered rows (priority × levels, one
        # row per distinct topic and priority) is cheaper than a product over every topic.
        mentee, topic = np.nonzero(priority)
        pairs, code = _distinct_rows(np.stack([topic, priority[mentee, topic].astype(np.int64)], axis=1))
        goals = np.bincount(mentee, minlength=len(mentees))
        most = max(1, int(goals.max(initial=0)))
        if most <= _GATHERED_GOALS and (len(pairs) + 1) * m * 4 <= _EXPANDED_LIMIT:
            rows = np.zeros((len(pairs) + 1, m), dtype=np.float32)  # the last: no goal
            rows[: len(pairs)] = FULL * pairs[:, 1:2] * level.T[pairs[:, 0]]
            self._goal_rows: np.ndarray | None = rows
            self._goal_codes = np.full((len(mentees), most), len(pairs), dtype=np.int64)
            self._goal_codes[mentee, np.arange(len(mentee)) - np.searchsorted(mentee, mentee)] = code.ravel()
        else:
            self._goal_rows = None
            self._priority = (FULL * priority).astype(np.float32)
            self._level_t = np.ascontiguousarray(level.T.astype(np.float32))
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

    def _chunk_rows(self) -> int:
        return max(1, _CHUNK_PAIRS // max(1, self.shape[1]))

    def _buffers(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Work arrays of this thread for `count` rows (at most a chunk), reused from chunk to
        chunk (fresh arrays cost page faults every time)."""
        held = getattr(self._local, "buffers", None)
        if held is None:
            shape = (self._chunk_rows(), self.shape[1])
            flat = any(b is not None for _, _, b in self._groups)
            held = (np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, self._dtype),
                    np.empty(shape, self._dtype), np.empty(shape if flat else (0, 0), np.int64))  # fmt: skip
            self._local.buffers = held
        return tuple(b[:count] for b in held)  # type: ignore[return-value]

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
            below, step = np.zeros(n, dtype=np.int64), self._chunk_rows()
            for start in range(0, n, step):
                raw = self._raw(slice(start, min(n, start + step)))
                # The minimum counts only mentors that no other rule rules out.
                below[start : start + step] = ((raw >= self._lowest) & (raw < self._min_points)).sum(axis=1)
            found.append((BELOW_MINIMUM, below))
        return found

    def _fast(self, rows: slice | np.ndarray) -> np.ndarray:
        count = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        result = np.empty((count, self.shape[1]), dtype=np.int32)
        step = self._chunk_rows()
        # The pairs asked for, found once a tile (each chunk takes its share).
        at, j = _named(self._asked_i, self._asked_j, rows)
        shares = np.searchsorted(at, np.arange(0, count + step, step)).tolist()
        for k, first in enumerate(range(0, count, step)):
            last = min(count, first + step)
            part = slice(rows.start + first, rows.start + last) if isinstance(rows, slice) else rows[first:last]
            asked = slice(shares[k], shares[k + 1])
            raw, out = self._raw(part, at[asked] - first, j[asked]), result[first:last]
            # A broken hard rule left raw below the lowest points an allowed pair can have.
            if self._min_points > 0:
                out[...] = np.where(raw >= self._min_points, raw, NOT_ALLOWED)
            elif self._lowest == 0:
                np.maximum(raw, NOT_ALLOWED, out=out, casting="unsafe")
            else:
                out[...] = np.where(raw >= self._lowest, np.maximum(raw, 0), NOT_ALLOWED)
        return result

    def _raw(self, rows: slice | np.ndarray, asked_at: np.ndarray | None = None,
             asked_j: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Points before the hard rules (below `_lowest` where one breaks) of at most a
        chunk of rows: this thread's work array, overwritten by its next chunk. The pairs
        asked for among them (row in the chunk, mentor) are found here unless given."""
        count = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        covered, spare, raw, looked, index = self._buffers(count)
        if self._goal_rows is None:
            np.matmul(self._priority[rows], self._level_t, out=covered)
        else:
            codes = self._goal_codes[rows]
            # (ndarray.take: np.take's wrapper costs a tenth of the gather at this size)
            self._goal_rows.take(codes[:, 0], axis=0, out=covered, mode="clip")
            for k in range(1, codes.shape[1]):
                self._goal_rows.take(codes[:, k], axis=0, out=spare, mode="clip")
                covered += spare
        np.divide(covered, self._goal_weight[rows, None], out=covered)
        np.copyto(raw, covered, casting="unsafe")  # truncation: the floor (covered ≥ 0; see _goals)
        if self._goal_points != 1:
            raw *= self._goal_points
        for a, table, b in self._groups:
            if b is None:
                table.take(a[rows], axis=0, out=looked, mode="clip")
            else:
                np.add(a[rows, None], b[None, :], out=index)
                table.take(index, out=looked, mode="wrap")
            raw += looked
        if asked_at is None or asked_j is None:
            asked_at, asked_j = _named(self._asked_i, self._asked_j, rows)
        if len(asked_at):
            np.add.at(raw, (asked_at, asked_j), UNKNOWN * self._settings.weights.preferences)
        return raw
