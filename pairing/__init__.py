"""Who should mentor whom: profiles, compatibility scores with reasons, hard constraints
and an exact cohort solver. Pure: no I/O, no Temporal.

Named `pairing`, not `matching`: a top-level package called `matching` would shadow the
PyPI `matching` package (Gale–Shapley and friends) that the benchmark compares against.

- `pairing.settings`: what a programme configures (criterion weights, hard constraints,
  the round objective, its own attributes, rules, rule sets per round and mentee quotas).
- `pairing.rules`: a programme's rules judged on profile attributes, pair by pair and for
  a block of pairs at once.
- `pairing.profiles`: mentor and mentee profiles, and reading them from CSV or JSON with
  every bad row reported by line.
- `pairing.constraints`: pairs that must never be proposed, and why.
- `pairing.scoring`: the score of one pair with its explanation, and the same scores for
  a whole cohort at once (vectorised, equal to the single-pair scores to the point).
- `pairing.solver`: the optimal assignment of a cohort under mentor capacities and mentee
  quotas, with dual prices that prove it optimal.
"""
