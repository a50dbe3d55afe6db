"""The exact assignment of cohorts too large for a score matrix (100,000 × 25,000: 10 GB of
int32), with a certificate of optimality checked over every pair.

The pairs come from a *source*: `tile(rows)` gives the points of mentees `rows` × every
mentor (NOT_ALLOWED = -1 where a pair may never be proposed); `pairing.tiles.TileScorer`
scores profiles that way, `MatrixSource` wraps a matrix (tests, smaller cohorts). Nothing
ever holds more than a few tiles.

1. Candidates, in one pass over every pair: each mentee's best `mentee_candidates` (5)
   mentors (plus its quota − 1) and each mentor's best `mentor_candidates_per_slot` (10)
   × capacity mentees (a running threshold per mentor: a tile keeps only pairs above it).
   Long mentor lists are what keep the first graph close to the optimum: in a cohort where
   most mentees want the same few mentors, their prices depend on mentees far down
   everyone's own lists.
2. The min-cost flow of `pairing.solver` on the candidate arcs, and its dual prices u
   (mentees), v (mentors), shortest-path potentials of the residual graph, both ≥ 0.
3. `pairing.certificate.certify`, a pass over every pair that knows nothing of how the
   solution was found (see there). If it proves the solution optimal, done: two passes.
4. Otherwise add the pairs it lists (each mentee's largest excesses, those within
   `near_fraction` of the highest score of a violation included: the prices move when the
   graph grows, and they would be the next violations) and solve again, the potentials
   starting from the last ones so that they move as little as the new arcs allow. Then
   `certify(base=…)` proves the new solution from that pass's record, walking again only the
   mentees whose bound the moved prices break — unless those are more than a third of
   them: then a whole `certify` again, the record of the next rounds. Every violation lies
   outside the graph (inside it the potentials leave none), so this ends; on the
   benchmark's cohorts the uniform ones after two passes, the popular ones after three.

For `max_matched` every pair weighs w + K with K = min(Σ quotas, Σ capacities) × (the
highest score) + 1, as in `pairing.solver`; the certificate checks K against the highest
score it sees. All arithmetic is on integers.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from pairing.certificate import (
    Certificate, PairSource, Rows, certify, kth_largest_at_most, quotas_of, rank_in_runs, rows_to_walk_again, scan,
)  # fmt: skip
from pairing.settings import Objective
from pairing.solver import Assignment, SolverError, SolveStats, _flow, _potentials

__all__ = ["Certificate", "MatrixSource", "PairSource", "TiledSolution", "candidates", "certify", "scan", "solve_tiled"]


class MatrixSource:
    """A score matrix as a source (int32; negative: not allowed)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores)
        self.shape = self.scores.shape

    def tile(self, rows: Rows) -> np.ndarray:
        return self.scores[rows].astype(np.int32)


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

    def work(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = slice(int(ids[0]), int(ids[-1]) + 1)
        if idle[rows].any():
            scores[idle[rows]] = -1
        if len(dead):
            scores[:, dead] = -1
        k = min(m, per_mentee + int(quotas[rows].max(initial=1)) - 1)
        ceiling = np.iinfo(scores.dtype).max
        row_bar = np.full(len(scores), ceiling, dtype=scores.dtype)
        if k > 0:
            # Keep what reaches a bound of each row's k-th best (a few more than k), then the
            # k best of those.
            row_bar = np.maximum(kth_largest_at_most(scores, k), threshold).astype(scores.dtype)
        with lock:
            column_bar = np.minimum(bar, ceiling).astype(scores.dtype)
        keep = scores >= row_bar[:, None]
        keep |= scores >= column_bar[None, :]
        ci, cj = np.divmod(np.flatnonzero(keep), m)
        cw = scores[ci, cj]
        by_row = cw >= row_bar[ci]
        ri, rj, rw = ci[by_row], cj[by_row], cw[by_row]
        order = np.argsort((ri << 32) | (2**31 - 1 - rw.astype(np.int64)))  # by mentee, best first
        ri, rj, rw = ri[order], rj[order], rw[order]
        best = rank_in_runs(ri) < k
        by_mentor = cw >= column_bar[cj]
        return (ri[best] + rows.start, rj[best], rw[best], ci[by_mentor] + rows.start, cj[by_mentor], cw[by_mentor],
                scores.max(initial=-1))  # fmt: skip

    def compact() -> None:
        i, j, w = (np.concatenate(x) for x in (pool.i, pool.j, pool.w))
        # By mentor, best first: one sort of a packed key (points are int32), three times
        # faster than a lexsort of the two; and not a stable sort (numpy's vectorised sort:
        # half the time of the merge sort at 20,000 × 5,000), which only changes which of a
        # mentor's equal-scoring mentees are kept.
        order = np.argsort((j.astype(np.int64) << 32) | (2**31 - 1 - w.astype(np.int64)))
        i, j, w = i[order], j[order], w[order]
        rank = rank_in_runs(j)
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
    # Walks over every pair: the candidate pass and each full `certify`.
    passes: int = 0
    # Processor seconds (every thread) of the same three parts.
    candidate_cpu: float = 0.0
    solve_cpu: float = 0.0
    certify_cpu: float = 0.0
    # Mentees walked again by `certify(base=…)`, over all its rounds.
    rows_rescanned: int = 0


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
    near_fraction: float = 0.05,
    listed_per_mentee: int = 16,
) -> TiledSolution:
    """The optimal assignment of every pair of `source`, with the certificate that proves it."""
    with _collector_paused():
        return _solve_tiled(source, capacities, objective, quotas, mentee_candidates, mentor_candidates_per_slot,
                            max_rounds, workers, near_fraction, listed_per_mentee)  # fmt: skip


_pauses = 0
_pauses_lock = threading.Lock()
_collecting = True


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a solve runs (and as it was after the last one
    ends). A walk allocates a few dozen small objects a tile, thousands of tiles: enough to
    start full collections, each of which visits every object of the process (the 125,000
    profiles of a round, millions of objects): 4 % of a solve's processor time at
    50,000 × 12,500 here. The few cycles a solve makes are collected once it ends."""
    global _pauses, _collecting
    with _pauses_lock:
        if _pauses == 0:
            _collecting = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _collecting:
                gc.enable()


def _solve_tiled(
    source: PairSource, capacities: np.ndarray | list[int], objective: Objective, quotas: np.ndarray | list[int] | None,
    mentee_candidates: int, mentor_candidates_per_slot: int, max_rounds: int, workers: int, near_fraction: float,
    listed_per_mentee: int,
) -> TiledSolution:  # fmt: skip
    started, cpu = time.perf_counter(), time.process_time()
    n, m = source.shape
    caps = np.asarray(capacities, dtype=np.int64)
    if caps.shape != (m,) or (caps < 0).any():
        raise ValueError("one non-negative capacity per mentor")
    q = quotas_of(quotas, n, m)
    threshold = 0 if objective == "max_matched" else 1
    ei, ej, ew, top = candidates(source, caps, q, threshold, mentee_candidates, mentor_candidates_per_slot, workers)
    bonus = min(int(q.sum()), int(caps.sum())) * max(top, 0) + 1 if objective == "max_matched" else 0
    candidate_seconds, candidate_cpu = time.perf_counter() - started, time.process_time() - cpu
    solve_cpu = certify_cpu = 0.0
    # Pairs within this much of a violation are listed (and added) with the violations: the
    # prices move when the graph grows, and they would be the next pass's violations. The
    # more a pass lists, the fewer rows the next round walks again, and the larger its flow
    # and memory: 5 % and 16 a mentee took the popular cohort of 50,000 × 12,500 from three
    # passes to two (2 % and 8: three; 8 % and 24: two, 1.3 times the arcs; bench/README.md).
    near = max(1, int(near_fraction * max(top, 0)))
    initial, added, solve_seconds, certify_seconds, passes, rescanned = len(ei), 0, 0.0, 0.0, 1, 0
    base: Certificate | None = None
    start: tuple[np.ndarray, np.ndarray] | None = None
    options = {"quotas": q, "workers": workers, "violations_per_mentee": listed_per_mentee, "near": near}
    for round_number in range(1, max_rounds + 1):
        solving, cpu = time.perf_counter(), time.process_time()
        used = _flow(caps, q, ei, ej, ew + bonus)
        # Warm: the prices that move least from the last full pass's, which `certify(base=…)` needs.
        start = _potentials(caps, q, ei, ej, ew + bonus, used, start)
        # Only a mentee with quota left over (a mentor with room) can come out below 0:
        # raising it to 0 keeps uᵢ + vⱼ ≥ w'ᵢⱼ wherever it held, and an unused quota's price
        # must be 0 for the bound to meet the total anyway.
        u, v = np.maximum(start[0], 0), np.maximum(start[1], 0)
        solve_seconds += time.perf_counter() - solving
        solve_cpu, cpu = solve_cpu + time.process_time() - cpu, time.process_time()
        certificate = None
        # Most rows to walk again: a full pass costs about as much, and bounds later rounds better.
        if base is not None and rows_to_walk_again(base, q, ei[used], ej[used], u, v) <= n // 3:
            certificate = certify(source, caps, objective, ei[used], ej[used], u, v, bonus=bonus, base=base, **options)  # type: ignore[arg-type]
            rescanned += certificate.rows_rescanned
        if certificate is None:
            certificate = certify(source, caps, objective, ei[used], ej[used], u, v, bonus=bonus, **options)  # type: ignore[arg-type]
            base, passes = certificate, passes + 1
        certify_seconds += certificate.seconds
        certify_cpu += time.process_time() - cpu
        if certificate.valid:
            stats = SolveStats(initial, round_number, added, False, time.perf_counter() - started)
            pi, pj = ei[used], ej[used]
            total = certificate.primal - bonus * len(pi)
            return TiledSolution(Assignment(pi, pj, total, stats), certificate, u, v, candidate_seconds, solve_seconds,
                                 certify_seconds, passes, candidate_cpu, solve_cpu, certify_cpu, rescanned)  # fmt: skip
        vi, vj, vw, excess = certificate.violations
        if certificate.problems or not (excess > 0).any():
            raise SolverError(f"the solution did not certify: {', '.join(certificate.problems) or 'dual bound above it'}")
        keys = np.concatenate([ei * m + ej, vi * m + vj])
        weights = np.concatenate([ew, vw])
        keys, first = np.unique(keys, return_index=True)
        ei, ej, ew = keys // m, keys % m, weights[first]
        added += len(keys) - initial - added
    raise SolverError(f"not certified after {max_rounds} pricing rounds")
