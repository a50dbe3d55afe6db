"""The exact assignment of cohorts too large for a score matrix (100,000 × 25,000: 10 GB of
int32), with a certificate of optimality checked over every pair.

The pairs come from a *source*: `tile(rows)` gives the points of mentees `rows` × every
mentor (NOT_ALLOWED = -1 where a pair may never be proposed); `pairing.tiles.TileScorer`
scores profiles that way, `MatrixSource` wraps a matrix (tests, smaller cohorts). Nothing
ever holds more than a few tiles.

1. Candidates, in one pass over every pair: each mentee's best `mentee_candidates` (5)
   mentors (plus its quota − 1) and each mentor's best `mentor_candidates_per_slot` (10)
   × capacity mentees (a running threshold per mentor: a tile keeps only pairs above it).
   Long mentor lists are what keep the first pricing pass short: in a cohort where most
   mentees want the same few mentors, their prices depend on mentees far down everyone's
   own lists.
2. The min-cost flow of `pairing.solver` on the candidate arcs, and its dual prices u
   (mentees), v (mentors), shortest-path potentials of the residual graph, both ≥ 0.
3. `certify`, a pass over every pair that knows nothing of how the solution was found: the
   pairs are feasible, and the dual bound Σ qᵢuᵢ + Σ cⱼvⱼ + Σ max(0, w'ᵢⱼ − uᵢ − vⱼ) over
   every allowed pair equals the solution's total Σ w'ᵢⱼ. The bound is the objective of
   the dual of the assignment LP (mentee quotas, mentor capacities, each pair at most once),
   so no assignment can score more: equality proves the solution optimal. The pairs with
   a positive term that the solution does not use are the violations.
4. While there are violations, add each mentee's and mentor's worst few to the candidate
   arcs, with the pairs within `near_fraction` of the highest score of a violation (the
   prices move when the graph grows: they would be the next pass's violations), and go
   to 2. Every violation lies outside the candidate graph (inside it the potentials leave
   none), so this ends; on the benchmark's cohorts after one pricing pass and the
   certifying one.

For `max_matched` every pair weighs w + K with K = min(Σ quotas, Σ capacities) × (the
highest score) + 1, as in `pairing.solver`; the certificate checks K against the highest
score it sees. All arithmetic is on integers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from pairing.settings import Objective
from pairing.solver import Assignment, SolverError, SolveStats, _flow, _most_violated, _potentials

T = TypeVar("T")

# Pairs held per tile: rows × mentors (a tile of int32 and its int64 work arrays stay in
# a few MB).
_TILE_PAIRS = 1 << 19


class PairSource(Protocol):
    @property
    def shape(self) -> tuple[int, int]: ...

    def tile(self, rows: slice) -> np.ndarray: ...


class MatrixSource:
    """A score matrix as a source (int32; negative: not allowed)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores)
        self.shape = self.scores.shape

    def tile(self, rows: slice) -> np.ndarray:
        return self.scores[rows].astype(np.int32)


def scan(source: PairSource, work: Callable[[slice, np.ndarray], T], workers: int = 2) -> Iterator[T]:
    """`work(rows, tile)` on every tile of the source, in order, `workers` tiles at a time
    (numpy releases the GIL in the heavy operations)."""
    n, m = source.shape
    if n == 0 or m == 0:
        return
    step = max(1, _TILE_PAIRS // m)
    tiles = [slice(start, min(n, start + step)) for start in range(0, n, step)]
    if workers <= 1 or len(tiles) <= 1:
        yield from (work(rows, source.tile(rows)) for rows in tiles)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # A window of submitted tiles, so that memory stays bounded.
        pending = [pool.submit(lambda rows: work(rows, source.tile(rows)), rows) for rows in tiles[: 2 * workers]]
        for k in range(len(tiles)):
            result = pending.pop(0).result()
            if k + 2 * workers < len(tiles):
                pending.append(pool.submit(lambda rows: work(rows, source.tile(rows)), tiles[k + 2 * workers]))
            yield result


def _quotas(quotas: np.ndarray | list[int] | None, n: int, m: int) -> np.ndarray:
    wanted = np.ones(n, dtype=np.int64) if quotas is None else np.asarray(quotas, dtype=np.int64)
    if wanted.shape != (n,) or (wanted < 0).any():
        raise ValueError("one non-negative quota per mentee")
    return np.minimum(wanted, m)


# -- 1. candidates ---------------------------------------------------------------------------


@dataclass
class _Candidates:
    i: list[np.ndarray] = field(default_factory=list)
    j: list[np.ndarray] = field(default_factory=list)
    w: list[np.ndarray] = field(default_factory=list)


def candidates(
    source: PairSource, caps: np.ndarray, quotas: np.ndarray, threshold: int, per_mentee: int, per_slot: int,
    workers: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:  # fmt: skip
    """(mentees, mentors, points) of the starting arcs, and the highest score of any pair."""
    n, m = source.shape
    wanted = np.minimum(caps * per_slot, n)
    floor = np.iinfo(np.int64).min
    # Each mentor's running threshold: the wanted[j]-th best rank seen so far.
    bar = np.where(wanted > 0, threshold, np.iinfo(np.int64).max).astype(np.int64)
    lock = threading.Lock()
    rows_found, pool = _Candidates(), _Candidates()
    top = floor

    dead = np.flatnonzero(caps == 0)
    idle = quotas == 0

    def work(rows: slice, scores: np.ndarray) -> tuple[np.ndarray, ...]:
        if idle[rows].any():
            scores[idle[rows]] = -1
        if len(dead):
            scores[:, dead] = -1
        k = min(m, per_mentee + int(quotas[rows].max(initial=1)) - 1)
        ceiling = np.iinfo(scores.dtype).max
        row_bar = np.full(len(scores), ceiling, dtype=scores.dtype)
        if k > 0:
            # The k-th best of a sample of columns is at most a row's k-th best: keep what
            # reaches it (a few times k per row), then the k best of those. (A partition of
            # the whole tile is slow: scores have many ties.)
            sample = scores[:, :: max(1, m // max(64 * k, 2048))]
            at = sample.shape[1] - min(k, sample.shape[1])
            row_bar = np.maximum(np.partition(sample, at, axis=1)[:, at], threshold).astype(scores.dtype)
        with lock:
            column_bar = np.minimum(bar, ceiling).astype(scores.dtype)
        keep = scores >= row_bar[:, None]
        keep |= scores >= column_bar[None, :]
        ci, cj = np.nonzero(keep)
        cw = scores[ci, cj]
        by_row = cw >= row_bar[ci]
        ri, rj, rw = ci[by_row], cj[by_row], cw[by_row]
        order = np.lexsort((-rw, ri))
        ri, rj, rw = ri[order], rj[order], rw[order]
        best = (np.arange(len(ri)) - np.searchsorted(ri, ri, side="left")) < k
        by_mentor = cw >= column_bar[cj]
        return (ri[best] + rows.start, rj[best], rw[best], ci[by_mentor] + rows.start, cj[by_mentor], cw[by_mentor],
                scores.max(initial=-1))  # fmt: skip

    def compact() -> None:
        i, j, w = (np.concatenate(x) for x in (pool.i, pool.j, pool.w))
        order = np.lexsort((-w, j))
        i, j, w = i[order], j[order], w[order]
        rank = np.arange(len(j)) - np.searchsorted(j, j, side="left")
        kept = rank < wanted[j]
        i, j, w = i[kept], j[kept], w[kept]
        pool.i[:], pool.j[:], pool.w[:] = [i], [j], [w]
        full = np.bincount(j, minlength=m) >= np.maximum(wanted, 1)
        last = np.searchsorted(j, np.arange(m), side="right") - 1
        with lock:
            bar[full] = np.maximum(bar[full], w[last[full]])

    held = 0
    for ri, rj, rw, mi, mj, mw, best in scan(source, work, workers):
        for found, parts in ((rows_found, (ri, rj, rw)), (pool, (mi, mj, mw))):
            found.i.append(parts[0])
            found.j.append(parts[1])
            found.w.append(parts[2])
        top = max(top, int(best))
        held += len(mi)
        if held > max(4 * int(wanted.sum()), 1 << 18):
            compact()
            held = len(pool.i[0])
    if pool.i:
        compact()
    i = np.concatenate([*rows_found.i, *pool.i, np.zeros(0, np.int64)]).astype(np.int64)
    j = np.concatenate([*rows_found.j, *pool.j, np.zeros(0, np.int64)]).astype(np.int64)
    w = np.concatenate([*rows_found.w, *pool.w, np.zeros(0, np.int64)]).astype(np.int64)
    keep = w >= threshold
    keys, first = np.unique(i[keep] * m + j[keep], return_index=True)
    return keys // m, keys % m, w[keep][first], top


# -- 3. the certificate ----------------------------------------------------------------------


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

    @property
    def valid(self) -> bool:
        return not self.problems and self.primal == self.dual


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
) -> Certificate:
    """Check that the pairs (`mentees[k]`, `mentors[k]`) are an optimal assignment of every
    pair of `source`, with dual prices `u`, `v`: independent of how either was found.
    `violations` lists unused pairs whose excess w' − uᵢ − vⱼ is above −`near` (1: the
    violations proper; more: also those close to one, for a solver to add), at most
    `violations_per_mentee` per mentee, the largest first."""
    started = time.perf_counter()
    n, m = source.shape
    caps = np.asarray(capacities, dtype=np.int64)
    q = _quotas(quotas, n, m)
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    order = np.lexsort((mentors, mentees))
    pi, pj = np.asarray(mentees, dtype=np.int64)[order], np.asarray(mentors, dtype=np.int64)[order]
    problems = []
    threshold = 0 if objective == "max_matched" else 1
    if len(pi) and ((pi < 0).any() or (pi >= n).any() or (pj < 0).any() or (pj >= m).any()):
        return Certificate(0, 0, bonus, 0, ("a pair is outside the cohort",), _no_violations())
    keys = pi * m + pj
    if len(np.unique(keys)) != len(keys):
        problems.append("a pair is used twice")
    if (np.bincount(pj, minlength=m) > caps).any():
        problems.append("a mentor is over capacity")
    if (np.bincount(pi, minlength=n) > q).any():
        problems.append("a mentee is over quota")
    if (u < 0).any() or (v < 0).any() or u.shape != (n,) or v.shape != (m,):
        problems.append("dual prices must be one non-negative number per mentee and per mentor")
        return Certificate(0, 0, bonus, 0, tuple(problems), _no_violations())
    if objective == "max_matched" and bonus < 1:
        problems.append("max_matched needs a bonus above any assignment's total")
    narrow = objective == "max_total" and int(u.max(initial=0)) + int(v.max(initial=0)) < 2**30
    v_narrow = v.astype(np.int32) if narrow else v
    limit = u - bonus  # reduced value: w + bonus − u − v = w − limit − v
    dead = np.flatnonzero(caps == 0)

    def work(rows: slice, scores: np.ndarray) -> tuple[int, int, int, int, bool, tuple[np.ndarray, ...]]:
        live = q[rows] > 0
        if len(dead):
            scores[:, dead] = -1  # a mentor without capacity takes no pair (checked above)
        first, last = np.searchsorted(pi, [rows.start, rows.stop])
        ui, uj = pi[first:last], pj[first:last]
        used_points = scores[ui - rows.start, uj].astype(np.int64)
        bad_pair = bool((used_points < threshold).any()) or bool((~live[ui - rows.start]).any())
        # The used pairs' terms (above 0 only where a quota above one meets the x ≤ 1 bound).
        gap = int(np.maximum(used_points - limit[ui] - v[uj], 0).sum())
        if narrow:
            excess = np.subtract(scores, v_narrow[None, :])
        else:
            excess = scores.astype(np.int64) - v[None, :]
        # Not allowed (below the threshold) and used pairs are left out of the rest:
        # (max_total: a pair below the threshold has w ≤ 0 ≤ u + v, never above 0.)
        if not narrow:
            np.putmask(excess, scores < threshold, np.iinfo(excess.dtype).min // 2)
        excess[ui - rows.start, uj] = np.iinfo(excess.dtype).min // 2
        # A row's best excess over its price; a mentee without quota takes no pair.
        row_best = excess.max(axis=1).astype(np.int64) - limit[rows]
        hot = np.flatnonzero((row_best > -near) & live)
        found = _no_violations()
        if len(hot):
            sub = excess[hot].astype(np.int64) - limit[rows][hot][:, None]
            gap += int(sub[sub > 0].sum())
            hi, hj = np.nonzero(sub > -near)
            he = sub[hi, hj]
            hi = hot[hi]
            allowed = scores[hi, hj] >= threshold
            hi, hj, he = hi[allowed], hj[allowed], he[allowed]
            order = np.lexsort((-he, hi))
            hi, hj, he = hi[order], hj[order], he[order]
            few = (np.arange(len(hi)) - np.searchsorted(hi, hi, side="left")) < violations_per_mentee
            hi, hj, he = hi[few], hj[few], he[few]
            found = (hi + rows.start, hj, scores[hi, hj].astype(np.int64), he)
        top = int(scores.max(axis=1)[live].max(initial=-1))
        return int(used_points.sum()) + bonus * len(ui), gap, top, len(ui), bad_pair, found

    primal = gap_total = seen = 0
    top = -1
    parts: list[tuple[np.ndarray, ...]] = []
    bad = False
    for points, gap, best, count, bad_pair, found in scan(source, work, workers):
        primal += points
        gap_total += gap
        top = max(top, best)
        seen += count
        bad |= bad_pair
        if len(found[0]):
            parts.append(found)
    if bad:
        problems.append("a pair is not allowed (or its mentee has no quota)")
    if seen != len(pi):
        problems.append("a pair is outside the cohort")
    if objective == "max_matched" and bonus <= min(int(q.sum()), int(caps.sum())) * max(top, 0):
        problems.append("the bonus does not outweigh every assignment's total")
    dual = int((q * u).sum()) + int((caps * v).sum()) + gap_total
    violations = tuple(np.concatenate([p[k] for p in parts]) for k in range(4)) if parts else _no_violations()
    return Certificate(primal, dual, bonus, n * m, tuple(problems), violations, time.perf_counter() - started)  # type: ignore[arg-type]


def _no_violations() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty, empty


# -- 2 and 4: solve, price, repeat -----------------------------------------------------------


@dataclass(frozen=True)
class TiledSolution:
    assignment: Assignment
    certificate: Certificate
    u: np.ndarray
    v: np.ndarray
    candidate_seconds: float
    solve_seconds: float
    certify_seconds: float


def solve_tiled(
    source: PairSource,
    capacities: np.ndarray | list[int],
    objective: Objective = "max_total",
    *,
    quotas: np.ndarray | list[int] | None = None,
    mentee_candidates: int = 5,
    mentor_candidates_per_slot: int = 10,
    max_rounds: int = 50,
    workers: int = 2,
    near_fraction: float = 0.02,
) -> TiledSolution:
    """The optimal assignment of every pair of `source`, with the certificate that proves it."""
    started = time.perf_counter()
    n, m = source.shape
    caps = np.asarray(capacities, dtype=np.int64)
    if caps.shape != (m,) or (caps < 0).any():
        raise ValueError("one non-negative capacity per mentor")
    q = _quotas(quotas, n, m)
    threshold = 0 if objective == "max_matched" else 1
    ei, ej, ew, top = candidates(source, caps, q, threshold, mentee_candidates, mentor_candidates_per_slot, workers)
    bonus = min(int(q.sum()), int(caps.sum())) * max(top, 0) + 1 if objective == "max_matched" else 0
    candidate_seconds = time.perf_counter() - started
    # Pairs within this much of a violation are added with the violations: the prices move
    # when the graph grows, and they would be the next pass's violations.
    near = max(1, int(near_fraction * max(top, 0)))
    initial, added, solve_seconds, certify_seconds = len(ei), 0, 0.0, 0.0
    for round_number in range(1, max_rounds + 1):
        solving = time.perf_counter()
        used = _flow(caps, q, ei, ej, ew + bonus)
        u, v = _potentials(caps, q, ei, ej, ew + bonus, used)
        # Only a mentee with quota left over (a mentor with room) can come out below 0:
        # raising it to 0 keeps uᵢ + vⱼ ≥ w'ᵢⱼ wherever it held, and an unused quota's price
        # must be 0 for the bound to meet the total anyway.
        u, v = np.maximum(u, 0), np.maximum(v, 0)
        solve_seconds += time.perf_counter() - solving
        certificate = certify(source, caps, objective, ei[used], ej[used], u, v, quotas=q, bonus=bonus, workers=workers,
                              near=near)  # fmt: skip
        certify_seconds += certificate.seconds
        if certificate.valid:
            stats = SolveStats(initial, round_number, added, False, time.perf_counter() - started)
            pi, pj = ei[used], ej[used]
            total = certificate.primal - bonus * len(pi)
            return TiledSolution(Assignment(pi, pj, total, stats), certificate, u, v,
                                 candidate_seconds, solve_seconds, certify_seconds)  # fmt: skip
        vi, vj, vw, excess = certificate.violations
        if certificate.problems or not (excess > 0).any():
            raise SolverError(f"the solution did not certify: {', '.join(certificate.problems) or 'dual bound above it'}")
        chosen = _most_violated(vi, vj, excess.astype(np.float64), caps, q, mentor_candidates_per_slot)
        keys = np.concatenate([ei * m + ej, vi[chosen] * m + vj[chosen]])
        weights = np.concatenate([ew, vw[chosen]])
        keys, first = np.unique(keys, return_index=True)
        ei, ej, ew = keys // m, keys % m, weights[first]
        added += int(chosen.sum())
    raise SolverError(f"not certified after {max_rounds} pricing rounds")
