"""The proof that an assignment of a cohort too large for a score matrix is optimal: a dual
certificate checked against every pair of a *source* (`pairing.pricing.PairSource`: the
points of mentees `rows` × every mentor, a few rows at a time), knowing nothing of how the
assignment or the prices were found.

`certify` walks every pair: the pairs are feasible, and the dual bound
Σ qᵢuᵢ + Σ cⱼvⱼ + Σ max(0, w'ᵢⱼ − uᵢ − vⱼ) over every allowed pair equals the solution's total
Σ w'ᵢⱼ. The bound is the objective of the dual of the assignment LP (mentee quotas, mentor
capacities, each pair at most once), so no assignment can score more: equality proves the
solution optimal. The pairs with a positive term that the solution does not use are the
violations.

`certify(base=…)` proves a later solution with other prices (u', v') from one such walk
without walking every pair again. The walk at prices (u, v) kept, for every mentee, the
pairs it listed (those it used, and its largest excesses above −near) with their points read
from the source, and the largest excess of the pairs it did not list, by mentee (eᵢ) and by
mentor (cⱼ). For an unlisted pair, w' − u'ᵢ − v'ⱼ = (w' − uᵢ − vⱼ) + (uᵢ − u'ᵢ) + (vⱼ − v'ⱼ)
≤ maxₖ (min(eᵢ, cₖ) + vₖ − v'ₖ) + uᵢ − u'ᵢ: where that is at most 0, no unlisted pair of the
row has a positive term, and the row's terms are those of its listed pairs, known exactly.
Every other row (and every row where the new solution uses a pair the walk did not list) is
walked again at the new prices. The bound is then exact over every pair, as if all had been
walked: the same proof, in two steps (tests/matching/test_matching_large.py compares the two
on drawn cohorts, pairs and prices).

For `max_matched` every pair weighs w + K, K (`bonus`) above any assignment's total score;
the check compares K with the highest score it sees. All arithmetic is on integers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from pairing.settings import Objective

T = TypeVar("T")
Rows = slice | np.ndarray

# Pairs held per tile: rows × mentors (a tile of int32 and its work arrays stay in a few MB).
TILE_PAIRS = 1 << 19


class PairSource(Protocol):
    @property
    def shape(self) -> tuple[int, int]: ...

    def tile(self, rows: Rows) -> np.ndarray: ...


def scan(source: PairSource, work: Callable[[np.ndarray, np.ndarray], T], workers: int = 2,
         rows: np.ndarray | None = None) -> Iterator[T]:  # fmt: skip
    """`work(row ids, tile)` on every tile of the source (of the sorted mentees `rows` only,
    if given), in order, `workers` tiles at a time (numpy releases the GIL in the heavy
    operations)."""
    from concurrent.futures import ThreadPoolExecutor

    n, m = source.shape
    if n == 0 or m == 0:
        return
    step = max(1, TILE_PAIRS // m)
    if rows is None:
        tiles: list[Rows] = [slice(start, min(n, start + step)) for start in range(0, n, step)]
    else:
        tiles = [rows[start : start + step] for start in range(0, len(rows), step)]

    def run(part: Rows) -> T:
        ids = np.arange(part.start, part.stop) if isinstance(part, slice) else part
        return work(ids, source.tile(part))

    if workers <= 1 or len(tiles) <= 1:
        yield from (run(part) for part in tiles)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # A window of submitted tiles, so that memory stays bounded.
        pending = [pool.submit(run, part) for part in tiles[: 2 * workers]]
        for k in range(len(tiles)):
            result = pending.pop(0).result()
            if k + 2 * workers < len(tiles):
                pending.append(pool.submit(run, tiles[k + 2 * workers]))
            yield result


def rank_in_runs(keys: np.ndarray) -> np.ndarray:
    """Each element's place in its run of equal `keys` (sorted): 0 for the first of a run.
    Linear, where a binary search of every key for its run's start is n log n."""
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
    return np.arange(len(keys)) - np.repeat(starts, np.diff(np.append(starts, len(keys))))


def kth_largest_at_most(values: np.ndarray, k: int) -> np.ndarray:
    """For each row of `values` (at least k columns), a number at most its k-th largest
    value, in one pass: the k-th largest of the maxima of at least k column blocks (each a
    different entry of the row). Keeping what reaches it keeps a few more than k a row, where
    a partition of every row would be slow (scores have many ties)."""
    rows, m = values.shape
    blocks = min(m, max(64, 4 * k))
    width = m // blocks
    maxima = values[:, : blocks * width].reshape(rows, blocks, width).max(axis=2)
    kth: np.ndarray = np.partition(maxima, blocks - k, axis=1)[:, blocks - k]
    return kth


def quotas_of(quotas: np.ndarray | list[int] | None, n: int, m: int) -> np.ndarray:
    wanted = np.ones(n, dtype=np.int64) if quotas is None else np.asarray(quotas, dtype=np.int64)
    if wanted.shape != (n,) or (wanted < 0).any():
        raise ValueError("one non-negative quota per mentee")
    return np.minimum(wanted, m)


def no_pairs(count: int = 4) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(0, dtype=np.int64) for _ in range(count))


@dataclass(frozen=True)
class Certificate:
    """The check of a solution against every pair: valid iff `problems` is empty and the
    dual bound equals the solution's total (in weights w' = w + bonus)."""

    primal: int
    dual: int
    bonus: int
    pairs_checked: int
    problems: tuple[str, ...]
    # Unused allowed pairs with w' > uᵢ + vⱼ − near: mentee, mentor, points, excess (a few per mentee).
    violations: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    seconds: float = 0.0
    # What `certify(base=…)` starts from: the prices, the used pairs (mentee,
    # mentor, points)...
    prices: tuple[np.ndarray, np.ndarray] | None = None
    used: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # ...and the largest excess of such a pair by mentee, and by mentor.
    unlisted: tuple[np.ndarray, np.ndarray] | None = None
    top: int = -1
    # Mentees walked again, with a `base` (0: every one walked).
    rows_rescanned: int = 0

    @property
    def valid(self) -> bool:
        return not self.problems and self.primal == self.dual


@dataclass(frozen=True)
class _Check:
    """What every check of a solution shares: the pairs sorted by mentee, the prices."""

    n: int
    m: int
    caps: np.ndarray
    q: np.ndarray
    pi: np.ndarray
    pj: np.ndarray
    u: np.ndarray
    v: np.ndarray
    threshold: int
    bonus: int
    problems: tuple[str, ...]


def _check(source: PairSource, capacities: np.ndarray | list[int], objective: Objective, mentees: np.ndarray,
           mentors: np.ndarray, u: np.ndarray, v: np.ndarray, quotas: np.ndarray | list[int] | None,
           bonus: int) -> _Check | Certificate:  # fmt: skip
    """The feasibility of the pairs and prices; a failed Certificate if nothing else can be checked."""
    n, m = source.shape
    caps = np.asarray(capacities, dtype=np.int64)
    q = quotas_of(quotas, n, m)
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    order = np.lexsort((mentors, mentees))
    pi, pj = np.asarray(mentees, dtype=np.int64)[order], np.asarray(mentors, dtype=np.int64)[order]
    problems = []
    if len(pi) and ((pi < 0).any() or (pi >= n).any() or (pj < 0).any() or (pj >= m).any()):
        return Certificate(0, 0, bonus, 0, ("a pair is outside the cohort",), no_pairs())  # type: ignore[arg-type]
    keys = pi * m + pj
    if len(np.unique(keys)) != len(keys):
        problems.append("a pair is used twice")
    if (np.bincount(pj, minlength=m) > caps).any():
        problems.append("a mentor is over capacity")
    if (np.bincount(pi, minlength=n) > q).any():
        problems.append("a mentee is over quota")
    if (u < 0).any() or (v < 0).any() or u.shape != (n,) or v.shape != (m,):
        problems.append("dual prices must be one non-negative number per mentee and per mentor")
        return Certificate(0, 0, bonus, 0, tuple(problems), no_pairs())  # type: ignore[arg-type]
    if objective == "max_matched" and bonus < 1:
        problems.append("max_matched needs a bonus above any assignment's total")
    threshold = 0 if objective == "max_matched" else 1
    return _Check(n, m, caps, q, pi, pj, u, v, threshold, bonus, tuple(problems))


@dataclass
class _Walk:
    """The sums of a walk over some mentees' rows."""

    primal: int = 0
    gap: int = 0
    top: int = -1
    seen: int = 0
    bad: bool = False
    found: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    used: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    unlisted: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    by_mentor: np.ndarray | None = None


def _joined(parts: list[tuple[np.ndarray, ...]], k: int) -> tuple[np.ndarray, ...]:
    held = [p for p in parts if len(p[0])]
    return tuple(np.concatenate([p[x] for p in held]) for x in range(k)) if held else no_pairs(k)


def _walk(source: PairSource, c: _Check, workers: int, near: int, per_mentee: int,
          rows: np.ndarray | None = None) -> _Walk:  # fmt: skip
    """Every pair of the mentees `rows` (default: all) at the prices of `c`."""
    # int32 where nothing can overflow (and an excess stays far above the mark of a pair left out).
    narrow = c.bonus == 0 and int(c.u.max(initial=0)) + int(c.v.max(initial=0)) < 2**27
    v_narrow = c.v.astype(np.int32) if narrow else c.v
    limit = c.u - c.bonus  # reduced value: w + bonus − u − v = w − limit − v
    dead = np.flatnonzero(c.caps == 0)
    pi, pj, v, m = c.pi, c.pj, c.v, c.m
    floor = -(2**62)

    def work(ids: np.ndarray, scores: np.ndarray) -> tuple[int, int, int, int, bool, tuple[np.ndarray, ...],
                                                          tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:  # fmt: skip
        live = c.q[ids] > 0
        if len(dead):
            scores[:, dead] = -1  # a mentor without capacity takes no pair (checked in _check)
        # The used pairs of these rows (ids are sorted): their position in the tile.
        first, last = np.searchsorted(pi, [ids[0], ids[-1] + 1])
        ui, uj = pi[first:last], pj[first:last]
        at = np.searchsorted(ids, ui)
        inside = at < len(ids)
        inside[inside] = ids[at[inside]] == ui[inside]
        ui, uj, at = ui[inside], uj[inside], at[inside]
        used_points = scores[at, uj].astype(np.int64)
        bad_pair = bool((used_points < c.threshold).any()) or bool((~live[at]).any())
        # The used pairs' terms (above 0 only where a quota above one meets the x ≤ 1 bound).
        gap = int(np.maximum(used_points - limit[ui] - v[uj], 0).sum())
        # Each pair's excess w' − uᵢ − vⱼ (in the tile's own type where that is exact).
        if narrow:
            excess = np.subtract(scores, v_narrow[None, :])
            excess -= limit[ids].astype(np.int32)[:, None]
        else:
            excess = scores.astype(np.int64) - v[None, :] - limit[ids][:, None]
        # Pairs not allowed (below the threshold) and used pairs are left out of the rest,
        # and the rows of mentees without quota: they end far below any real excess (below
        # `left_out`; a real one is above −2²⁸ in int32, far above it in int64). Arithmetic:
        # a masked store of that value costs more than the rest of the walk, the pattern of
        # rules being random.
        lowest = np.iinfo(excess.dtype).min // 2
        left_out = lowest // 2
        excess -= (scores < c.threshold).view(np.int8) * excess.dtype.type(-lowest)
        excess[at, uj] = lowest
        excess[~live] = lowest
        # Each row's cut: its pairs above −near, but where a row has more than it lists, only
        # those that can be among its largest (at the first prices of the popular 100,000 ×
        # 25,000 cohort, thousands a row are within near: sorting them all took a quarter of
        # the walk).
        cut = np.full(len(ids), 1 - near, dtype=excess.dtype)
        if 0 < per_mentee < m:
            np.maximum(cut, kth_largest_at_most(excess, per_mentee), out=cut)
        flat = np.flatnonzero(excess >= cut[:, None])
        # Every positive excess is a term of the bound: the flat pairs' where the cut is at
        # most 1, the whole row's where it is above.
        above = cut > 1
        if above.any():
            gap += int(np.maximum(excess[above], 0).sum(dtype=np.int64))
        found = no_pairs()
        if len(flat):
            hi, hj = np.divmod(flat, m)
            he = excess.ravel()[flat].astype(np.int64)
            gap += int(he[(he > 0) & ~above[hi]].sum())
            # By mentee, largest first: one sort of a packed key where the excess fits 32 bits
            # (a lexsort of two keys is slower).
            if narrow:
                order = np.argsort((hi << 32) | (2**31 - 1 - he))
            else:
                order = np.lexsort((-he, hi))
            hi, hj, he = hi[order], hj[order], he[order]
            few = rank_in_runs(hi) < per_mentee
            hi, hj, he = hi[few], hj[few], he[few]
            excess[hi, hj] = lowest
            found = (ids[hi], hj, scores[hi, hj].astype(np.int64), he)
        # What the listed pairs leave: each row's and each column's largest excess over the rest.
        row_best, column_best = excess.max(axis=1).astype(np.int64), excess.max(axis=0).astype(np.int64)
        row_best[row_best < left_out] = floor
        column_best[column_best < left_out] = floor
        top = int(scores.max(axis=1)[live].max(initial=-1)) if c.bonus else -1
        return (int(used_points.sum()) + c.bonus * len(ui), gap, top, len(ui), bad_pair, found,
                (ui, uj, used_points), (ids, row_best, column_best))  # fmt: skip

    walked = _Walk()
    for points, gap, best, count, bad_pair, found, used, unlisted in scan(source, work, workers, rows):
        walked.primal += points
        walked.gap += gap
        walked.top = max(walked.top, best)
        walked.seen += count
        walked.bad |= bad_pair
        walked.found.append(found)
        walked.used.append(used)
        ids, row_best, column_best = unlisted
        walked.unlisted.append((ids, row_best))
        # (Kept as one running maximum: a column row per tile would be 1 GB at 100,000 × 25,000.)
        walked.by_mentor = column_best if walked.by_mentor is None else np.maximum(walked.by_mentor, column_best)
    return walked


def _finish(c: _Check, objective: Objective, walked: _Walk, primal: int, gap: int, seen: int, top: int,
            problems: list[str]) -> tuple[int, list[str]]:  # fmt: skip
    """The dual bound, and the problems the sums reveal."""
    if walked.bad:
        problems.append("a pair is not allowed (or its mentee has no quota)")
    if seen != len(c.pi):
        problems.append("a pair is outside the cohort")
    if objective == "max_matched" and c.bonus <= min(int(c.q.sum()), int(c.caps.sum())) * max(top, 0):
        problems.append("the bonus does not outweigh every assignment's total")
    return int((c.q * c.u).sum()) + int((c.caps * c.v).sum()) + gap, problems


def certify(
    source: PairSource,
    capacities: np.ndarray | list[int],
    objective: Objective,
    mentees: np.ndarray,
    mentors: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    *,
    quotas: np.ndarray | list[int] | None = None,
    bonus: int = 0,
    workers: int = 2,
    violations_per_mentee: int = 4,
    near: int = 1,
    base: Certificate | None = None,
) -> Certificate:
    """Check that the pairs (`mentees[k]`, `mentors[k]`) are an optimal assignment of every
    pair of `source`, with dual prices `u`, `v`: independent of how either was found.
    `violations` lists unused pairs whose excess w' − uᵢ − vⱼ is above −`near` (1: the
    violations proper; more: also those close to one, for a solver to add), at most
    `violations_per_mentee` per mentee, the largest first.

    With `base`, an earlier `certify` of the same source (other pairs, other prices, the
    same bonus), only the rows it does not bound are walked (the module's docstring says
    why that is exact)."""
    started = time.perf_counter()
    c = _check(source, capacities, objective, mentees, mentors, u, v, quotas, bonus)
    if isinstance(c, Certificate):
        return c
    if base is not None:
        if base.bonus != bonus:
            return Certificate(0, 0, bonus, 0, ("the earlier walk had another bonus",), no_pairs())  # type: ignore[arg-type]
        return _recertify(base, source, c, objective, workers, violations_per_mentee, near, started)
    walked = _walk(source, c, workers, near, violations_per_mentee)
    dual, problems = _finish(c, objective, walked, walked.primal, walked.gap, walked.seen, walked.top, list(c.problems))
    unlisted = np.full(c.n, -(2**62), dtype=np.int64)
    by_mentor = np.full(c.m, -(2**62), dtype=np.int64) if walked.by_mentor is None else walked.by_mentor
    for ids, best in walked.unlisted:
        unlisted[ids] = best
    found, used = _joined(walked.found, 4), _joined(walked.used, 3)
    return Certificate(walked.primal, dual, bonus, c.n * c.m, tuple(problems), (found[0], found[1], found[2], found[3]),
                       time.perf_counter() - started, (c.u, c.v), (used[0], used[1], used[2]), (unlisted, by_mentor),
                       walked.top)  # fmt: skip


def _unlisted_at(by_mentee: np.ndarray, by_mentor: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """For each mentee i, the most an unlisted pair's excess can be once the mentors' prices
    fall by `drop` (rise where negative): maxⱼ min(eᵢ, cⱼ) + dropⱼ, where eᵢ and cⱼ bound
    the unlisted excess of the mentee's row and of the mentor's column."""
    order = np.argsort(by_mentor)
    column, fall = by_mentor[order], drop[order]
    # Mentors with cⱼ ≥ eᵢ add at most eᵢ + their largest drop; the others cⱼ + dropⱼ.
    after = np.maximum.accumulate(np.append(fall, -(2**61))[::-1])[::-1]
    before = np.append(-(2**61), np.maximum.accumulate(column + fall))
    k = np.searchsorted(column, by_mentee)
    bound: np.ndarray = np.maximum(by_mentee + after[k], before[k])
    return bound


def _bounded(base: Certificate, q: np.ndarray, pi: np.ndarray, pj: np.ndarray, u: np.ndarray, v: np.ndarray,
             threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The pairs `base` listed (keys, points), the rows to walk again for the pairs (`pi`,
    `pj`, sorted) at prices `u`, `v`, and where each pair is among the keys."""
    assert base.prices is not None and base.used is not None and base.unlisted is not None
    m = len(v)
    # The pairs the walk listed, with the points it read: used there, and its violations.
    keys = np.concatenate([base.used[0] * m + base.used[1], base.violations[0] * m + base.violations[1]])
    points = np.concatenate([base.used[2], base.violations[2]])
    order = np.argsort(keys)
    keys, points = keys[order], points[order]
    # (A pair not allowed takes no term: the rows that use one are walked again, and refused.)
    keys, points = keys[points >= threshold], points[points >= threshold]
    # A row is bounded where its unlisted pairs stay at or below 0 at the new prices...
    base_u, base_v = base.prices
    again = (_unlisted_at(*base.unlisted, base_v - v) + (base_u - u) > 0) & (q > 0)
    # ...and where every pair the solution uses there was listed.
    wanted = pi * m + pj
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    listed = (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
    again[pi[~listed]] = True
    return keys, points, again, at


def rows_to_walk_again(base: Certificate, quotas: np.ndarray, mentees: np.ndarray, mentors: np.ndarray, u: np.ndarray,
                       v: np.ndarray) -> int:  # fmt: skip
    """How many mentees `certify(base=…)` would walk again (feasibility aside): a solver's choice
    between it and a whole `certify`."""
    order = np.lexsort((mentors, mentees))
    threshold = 0 if base.bonus else 1
    return int(_bounded(base, quotas, mentees[order], mentors[order], u, v, threshold)[2].sum())


def _recertify(base: Certificate, source: PairSource, c: _Check, objective: Objective, workers: int, per_mentee: int,
               near: int, started: float) -> Certificate:  # fmt: skip
    if base.prices is None or base.used is None or base.unlisted is None:
        raise ValueError("an earlier walk is a certificate made by certify")
    m, limit = c.m, c.u - c.bonus
    keys, points, again, at = _bounded(base, c.q, c.pi, c.pj, c.u, c.v, c.threshold)
    rows = np.flatnonzero(again)
    walked = _walk(source, c, workers, near, per_mentee, rows)
    # The bounded rows: their listed pairs' terms, and their used pairs' points.
    bounded = ~again[keys // m]
    bi, bj, bw = keys[bounded] // m, keys[bounded] % m, points[bounded]
    gap = int(np.maximum(bw - limit[bi] - c.v[bj], 0).sum())
    kept = ~again[c.pi]
    kept_points = points[at[kept]] if len(keys) else np.zeros(0, dtype=np.int64)
    walked.bad |= bool((kept_points < c.threshold).any())
    primal = walked.primal + int(kept_points.sum()) + c.bonus * int(kept.sum())
    top = max(base.top, walked.top)
    dual, problems = _finish(c, objective, walked, primal, walked.gap + gap, walked.seen + int(kept.sum()), top,
                             list(c.problems))  # fmt: skip
    return Certificate(primal, dual, base.bonus, base.pairs_checked, tuple(problems), _joined(walked.found, 4),  # type: ignore[arg-type]
                       time.perf_counter() - started, top=top, rows_rescanned=len(rows))  # fmt: skip
