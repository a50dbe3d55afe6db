"""The optimal assignment of a cohort: each mentee at most `quota` mentors (one by default),
each mentor at most `capacity` mentees, each pair at most once, only allowed pairs, the
programme's objective maximised exactly.

It is a min-cost flow (OR-Tools): each mentee supplies its quota, mentee → mentor arcs
(capacity 1) cost minus the pair's points, and every unit of a quota may also go unfilled
at no cost (the mentee's skip arc to the sink). A dense graph (every allowed pair) is exact but
slow (25 million arcs at 10,000 × 2,500). So we solve a sparse graph and prove it lost
nothing:

1. Candidates: each mentee's best `mentee_candidates` mentors, and each mentor's best
   `mentor_candidates_per_slot × capacity` mentees (the second list is what keeps a
   cohort where everyone wants the same few mentors solvable from the start).
2. Solve the min-cost flow on the candidate arcs.
3. Price every pair left out. Node potentials π that make every residual arc's reduced
   cost non-negative are shortest-path distances in the residual graph; we compute them
   with a vectorised Bellman–Ford (the optimum has no negative cycle, so it converges;
   in practice in a few dozen sweeps). A left-out pair (i, j) would be a residual arc
   i → j with reduced cost −w'ᵢⱼ + πᵢ − πⱼ. If none is negative, π certifies the sparse
   optimum as optimal for the full graph (no negative cycle can use a left-out arc, by the
   reduced-cost argument) — exactness is proved, not hoped for.
4. Otherwise add the worst violations (a few per mentee, and per mentor its candidate
   quota) and go to 2. After `max_rounds` rounds, solve the dense graph instead (never
   needed in the benchmark, but exactness must not depend on luck).

For `max_matched` every pair's weight is raised by K = min(quotas, slots) × (best score)
+ 1, more than any assignment's whole score: one more pair then outweighs any loss of
score, and among assignments with the most pairs the score decides (a lexicographic
objective as one weighted problem).

All arithmetic is on integers, so "optimal" means optimal to the point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ortools.graph.python import min_cost_flow

from pairing.settings import Objective


# Violations added per mentee and pricing round (per mentor: its candidate quota + 1).
_ADDED_PER_MENTEE = 2


class SolverError(RuntimeError):
    pass


@dataclass(frozen=True)
class SolveStats:
    candidate_pairs: int = 0
    pricing_rounds: int = 0
    added_pairs: int = 0
    dense_fallback: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class Assignment:
    """Pairs as parallel arrays of mentee and mentor indices, sorted by mentee, then mentor."""

    mentees: np.ndarray
    mentors: np.ndarray
    total_points: int
    stats: SolveStats = field(default_factory=SolveStats)

    @property
    def matched(self) -> int:
        """Pairs (with quotas above one, a mentee may be in several)."""
        return len(self.mentees)

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.mentees.tolist(), self.mentors.tolist(), strict=True))


@dataclass(frozen=True)
class _Problem:
    scores: np.ndarray
    caps: np.ndarray
    quotas: np.ndarray
    # Pairs below this are never arcs; K of max_matched (0 for max_total).
    threshold: int
    bonus: int


def _prepare(
    scores: np.ndarray, capacities: np.ndarray | list[int], objective: Objective, quotas: np.ndarray | list[int] | None
) -> _Problem:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError("scores must be a mentees × mentors matrix")
    caps = np.asarray(capacities, dtype=np.int64)
    if caps.shape != (scores.shape[1],):
        raise ValueError("one capacity per mentor")
    if (caps < 0).any():
        raise ValueError("capacities must not be negative")
    wanted = np.ones(scores.shape[0], dtype=np.int64) if quotas is None else np.asarray(quotas, dtype=np.int64)
    if wanted.shape != (scores.shape[0],):
        raise ValueError("one quota per mentee")
    if (wanted < 0).any():
        raise ValueError("quotas must not be negative")
    # A mentee can use no more of its quota than there are mentors.
    wanted = np.minimum(wanted, scores.shape[1])
    if (wanted == 0).any():
        # A mentee with no quota left has no pair worth pricing.
        scores = scores.copy()
        scores[wanted == 0] = -1
    # A zero-point pair adds nothing to the total: under max_total it is not worth an arc.
    threshold = 0 if objective == "max_matched" else 1
    top = int(scores.max(initial=0))
    bonus = min(int(wanted.sum()), int(caps.sum())) * top + 1 if objective == "max_matched" else 0
    return _Problem(scores, caps, wanted, threshold, bonus)


def _flow(caps: np.ndarray, quotas: np.ndarray, ei: np.ndarray, ej: np.ndarray, ew: np.ndarray) -> np.ndarray:
    """Min-cost flow over the given pairs; returns which pairs are used."""
    n, m = len(quotas), len(caps)
    sink = n + m
    solver = min_cost_flow.SimpleMinCostFlow()
    arcs = len(ei)
    tails = np.concatenate([ei, np.arange(n), n + np.arange(m)]).astype(np.int32)
    heads = np.concatenate([n + ej, np.full(n, sink), np.full(m, sink)]).astype(np.int32)
    capacity = np.concatenate([np.ones(arcs, dtype=np.int64), quotas, caps])
    # Costs divided by their common factor (20 on the benchmark's profile cohorts): the same
    # optimum, and OR-Tools' cost scaling has fewer rounds to make (its time falls by 15 %).
    common = max(1, int(np.gcd.reduce(ew))) if arcs else 1
    cost = np.concatenate([-(ew // common), np.zeros(n + m, dtype=np.int64)])
    solver.add_arcs_with_capacity_and_unit_cost(tails, heads, capacity, cost)
    supplies = np.zeros(n + m + 1, dtype=np.int64)
    supplies[:n] = quotas
    supplies[sink] = -int(quotas.sum())
    solver.set_nodes_supplies(np.arange(n + m + 1, dtype=np.int32), supplies)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise SolverError(f"min-cost flow ended with status {status}")
    if arcs == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(solver.flows(np.arange(arcs, dtype=np.int32))) > 0


def _potentials(
    caps: np.ndarray, quotas: np.ndarray, ei: np.ndarray, ej: np.ndarray, ew: np.ndarray, used: np.ndarray,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dual values (u per mentee, v per mentor) with uᵢ + vⱼ ≥ w'ᵢⱼ on every unused pair of
    the graph: shortest-path distances in the residual graph from a virtual root joined to
    every node at cost 0 (vectorised Bellman–Ford over the bipartite structure).

    With `start` (earlier values (u, v), say of a smaller graph) the same relaxation begins
    there instead: it ends at the largest potentials at most those, so only what the new
    arcs and flow force moves (pairing.pricing needs prices that move little)."""
    n, m = len(quotas), len(caps)
    load = np.bincount(ej[used], minlength=m)
    # Used pairs sorted by mentee: a mentee with several mentors takes the least distance.
    by_mentee = np.argsort(ei[used], kind="stable")
    matched_mentee, matched_mentor, matched_weight = ei[used][by_mentee], ej[used][by_mentee], ew[used][by_mentee]
    matched_ids, matched_starts = np.unique(matched_mentee, return_index=True)
    taken = np.bincount(matched_mentee, minlength=n)
    # Residual skip arcs: mentee → sink where some of the quota is used (its skip flow can
    # grow), sink → mentee where some is unused (its skip flow can shrink).
    is_matched, has_room = taken > 0, taken < quotas
    free = ~used
    fi, fj, fw = ei[free], ej[free], ew[free]
    order = np.argsort(fj, kind="stable")
    fi, fj, fw = fi[order], fj[order], fw[order]
    reached = np.unique(fj)
    starts = np.searchsorted(fj, reached)
    not_full, has_flow = load < caps, load > 0

    mentee_d = np.zeros(n, dtype=np.int64) if start is None else np.asarray(start[0], dtype=np.int64).copy()
    mentor_d = np.zeros(m, dtype=np.int64) if start is None else -np.asarray(start[1], dtype=np.int64)
    sink_d = 0
    for _ in range(2 * (n + m) + 3):
        # residual arcs: mentee → mentor on unused pairs (cost −w'), mentor → mentee on used
        # pairs (+w'), mentee ↔ sink (skip arc), mentor ↔ sink (capacity arc).
        new_mentor = mentor_d.copy()
        if len(fi):
            new_mentor[reached] = np.minimum(new_mentor[reached], np.minimum.reduceat(mentee_d[fi] - fw, starts))
        new_mentor[has_flow] = np.minimum(new_mentor[has_flow], sink_d)
        new_mentee = mentee_d.copy()
        if len(matched_ids):
            back = np.minimum.reduceat(new_mentor[matched_mentor] + matched_weight, matched_starts)
            new_mentee[matched_ids] = np.minimum(new_mentee[matched_ids], back)
        new_mentee[has_room] = np.minimum(new_mentee[has_room], sink_d)
        new_sink = min(sink_d, int(new_mentee[is_matched].min(initial=sink_d)), int(new_mentor[not_full].min(initial=sink_d)))
        if new_sink == sink_d and np.array_equal(new_mentee, mentee_d) and np.array_equal(new_mentor, mentor_d):
            return mentee_d - sink_d, sink_d - mentor_d
        mentee_d, mentor_d, sink_d = new_mentee, new_mentor, new_sink
    raise SolverError("the residual graph has a negative cycle: the flow was not optimal")


def _candidates(
    scores: np.ndarray, caps: np.ndarray, quotas: np.ndarray, threshold: int, per_mentee: int, per_slot: int
) -> np.ndarray:
    """Flat indices of the starting pairs: each mentee's best mentors, each mentor's best mentees."""
    n, m = scores.shape
    keep = np.zeros((n, m), dtype=bool)
    k = min(per_mentee + int(quotas.max(initial=1)) - 1, m)
    if k > 0:
        kth = np.partition(scores, m - k, axis=1)[:, m - k]
        keep |= scores >= kth[:, None]
    # Each mentor's best mentees. A column partition of the matrix is slow (strided), so
    # partition the rows of a transposed copy, built tile by tile to stay in cache.
    wanted = np.minimum(caps * per_slot, n)
    most = int(wanted.max(initial=0))
    if most > 0:
        columns = _transposed(scores)
        best = np.partition(columns, n - most, axis=1)[:, n - most :]
        best.sort(axis=1)
        kth_col = best[np.arange(m), most - np.maximum(wanted, 1)].astype(np.int64)
        kth_col[wanted == 0] = np.iinfo(np.int64).max
        keep |= scores >= kth_col[None, :]
    keep &= scores >= threshold
    return np.flatnonzero(keep)


def _transposed(matrix: np.ndarray, rows: int = 64, columns: int = 512) -> np.ndarray:
    out = np.empty(matrix.shape[::-1], dtype=matrix.dtype)
    for i in range(0, matrix.shape[0], rows):
        for j in range(0, matrix.shape[1], columns):
            out[j : j + columns, i : i + rows] = matrix[i : i + rows, j : j + columns].T
    return out


def _violations(
    scores: np.ndarray, threshold: int, bonus: int, u: np.ndarray, v: np.ndarray,
    used_i: np.ndarray, used_j: np.ndarray, block_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Every allowed, unused pair with uᵢ + vⱼ < w'ᵢⱼ (a negative reduced cost), and by how
    much. `used_i`, `used_j`: the pairs of the flow, sorted by mentee."""
    n, m = scores.shape
    # Reduced cost > 0 ⇔ wᵢⱼ − vⱼ > uᵢ − bonus. int32 is six times faster than int64
    # here; use it only when nothing can overflow.
    top = int(np.abs(v).max(initial=0)) + int(np.abs(u - bonus).max(initial=0)) + int(scores.max(initial=0))
    exact32 = top < 2**30
    dtype = np.int32 if exact32 else np.float64
    floor = -(2**30) if exact32 else -np.inf
    v_, limit = v.astype(dtype), (u - bonus).astype(dtype)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_excess: list[np.ndarray] = []
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        block = scores[start:stop]
        excess = np.subtract(block, v_, dtype=dtype)
        excess[block < threshold] = floor
        first, last = np.searchsorted(used_i, [start, stop])
        excess[used_i[first:last] - start, used_j[first:last]] = floor
        excess -= limit[start:stop, None]
        flagged = np.flatnonzero(excess.max(axis=1) > 0)
        if len(flagged):
            rows_excess = excess[flagged]
            bad_i, bad_j = np.nonzero(rows_excess > 0)
            found_i.append(flagged[bad_i] + start)
            found_j.append(bad_j)
            found_excess.append(rows_excess[bad_i, bad_j].astype(np.float64))
    if not found_i:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_excess)


def _most_violated(
    i: np.ndarray, j: np.ndarray, excess: np.ndarray, caps: np.ndarray, quotas: np.ndarray, per_slot: int
) -> np.ndarray:
    """The violations worth adding: each mentee's and each mentor's worst few. Adding all of
    them can mean hundreds of thousands of arcs when an under-used mentor looks attractive to
    every unmatched mentee; a few per node fix the prices just as well."""
    keep = np.zeros(len(i), dtype=bool)
    for group, limit in ((i, quotas[i] + _ADDED_PER_MENTEE - 1), (j, caps[j] * per_slot + 1)):
        order = np.lexsort((-excess, group))
        sorted_group = group[order]
        first = np.searchsorted(sorted_group, sorted_group, side="left")
        rank = np.arange(len(order)) - first
        keep[order[rank < limit[order]]] = True
    return keep


def solve(
    scores: np.ndarray,
    capacities: np.ndarray | list[int],
    objective: Objective = "max_total",
    *,
    quotas: np.ndarray | list[int] | None = None,
    mentee_candidates: int = 10,
    mentor_candidates_per_slot: int = 3,
    max_rounds: int = 8,
    block_rows: int = 1024,
) -> Assignment:
    """The optimal assignment for `scores` (mentees × mentors integer points, negative =
    not allowed), mentor `capacities` and mentee `quotas` (default: one mentor each),
    proved optimal against every allowed pair."""
    started = time.perf_counter()
    problem = _prepare(scores, capacities, objective, quotas)
    scores, caps, quotas_ = problem.scores, problem.caps, problem.quotas
    n, m = scores.shape
    if n == 0 or m == 0 or caps.sum() == 0 or quotas_.sum() == 0:
        empty = np.zeros(0, np.int64)
        return _assignment(empty, empty, scores, SolveStats(seconds=time.perf_counter() - started))
    keep = _candidates(scores, caps, quotas_, problem.threshold, mentee_candidates, mentor_candidates_per_slot)
    initial, added = len(keep), 0
    for round_number in range(1, max_rounds + 1):
        ei, ej = np.divmod(keep, m)
        ew = scores.ravel()[keep].astype(np.int64) + problem.bonus
        used = _flow(caps, quotas_, ei, ej, ew)
        u, v = _potentials(caps, quotas_, ei, ej, ew, used)
        # keep is sorted (flat indices): the used pairs come sorted by mentee.
        add_i, add_j, excess = _violations(scores, problem.threshold, problem.bonus, u, v, ei[used], ej[used], block_rows)
        if len(add_i) == 0:
            stats = SolveStats(initial, round_number, added, False, time.perf_counter() - started)
            return _assignment(ei[used], ej[used], scores, stats)
        chosen = _most_violated(add_i, add_j, excess, caps, quotas_, mentor_candidates_per_slot)
        keep = np.union1d(keep, add_i[chosen] * m + add_j[chosen])
        added += int(chosen.sum())
    assignment = solve_dense(scores, caps, objective, quotas=quotas_)
    stats = SolveStats(initial, max_rounds, added, True, time.perf_counter() - started)
    return _assignment(assignment.mentees, assignment.mentors, scores, stats)


def solve_dense(
    scores: np.ndarray,
    capacities: np.ndarray | list[int],
    objective: Objective = "max_total",
    *,
    quotas: np.ndarray | list[int] | None = None,
) -> Assignment:
    """The same optimum from the dense graph (every allowed pair an arc): the reference."""
    started = time.perf_counter()
    problem = _prepare(scores, capacities, objective, quotas)
    scores = problem.scores
    ei, ej = np.nonzero(scores >= problem.threshold)
    ew = scores[ei, ej].astype(np.int64) + problem.bonus
    used = _flow(problem.caps, problem.quotas, ei, ej, ew) if scores.size else np.zeros(0, dtype=bool)
    return _assignment(ei[used], ej[used], scores, SolveStats(len(ei), 1, 0, True, time.perf_counter() - started))


def greedy(
    scores: np.ndarray, capacities: np.ndarray | list[int], *, quotas: np.ndarray | list[int] | None = None
) -> Assignment:
    """Baseline: take pairs best first while both sides have room."""
    started = time.perf_counter()
    scores = np.asarray(scores)
    remaining = np.asarray(capacities, dtype=np.int64).copy()
    wanted = np.ones(scores.shape[0], dtype=np.int64) if quotas is None else np.asarray(quotas, dtype=np.int64).copy()
    ei, ej = np.nonzero(scores > 0)
    order = np.argsort(-scores[ei, ej], kind="stable")
    open_mentees, open_slots = int((wanted > 0).sum()), int(remaining.sum())
    chosen_i: list[int] = []
    chosen_j: list[int] = []
    # In chunks: a cohort has millions of pairs, and greedy usually stops long before the last.
    for start in range(0, len(order), 1 << 18):
        if open_mentees == 0 or open_slots == 0:
            break
        chunk = order[start : start + (1 << 18)]
        for i, j in zip(ei[chunk].tolist(), ej[chunk].tolist(), strict=True):
            if wanted[i] > 0 and remaining[j] > 0:
                wanted[i] -= 1
                remaining[j] -= 1
                open_mentees -= wanted[i] == 0
                open_slots -= 1
                chosen_i.append(i)
                chosen_j.append(j)
    stats = SolveStats(len(ei), 0, 0, False, time.perf_counter() - started)
    return _assignment(np.array(chosen_i, dtype=np.int64), np.array(chosen_j, dtype=np.int64), scores, stats)


def _assignment(mentees: np.ndarray, mentors: np.ndarray, scores: np.ndarray, stats: SolveStats) -> Assignment:
    order = np.lexsort((mentors, mentees))
    mentees, mentors = np.asarray(mentees)[order].astype(np.int64), np.asarray(mentors)[order].astype(np.int64)
    total = int(scores[mentees, mentors].astype(np.int64).sum()) if len(mentees) else 0
    return Assignment(mentees=mentees, mentors=mentors, total_points=total, stats=stats)
