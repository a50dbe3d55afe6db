"""The relationship's rules as pure code: commands, events, state, decide/evolve, deadlines.

`commands.py` (what may be sent), `model.py` (what happened), `state.py` (what a
relationship knows); one module per lifecycle stage holds its commands' rules, decisions
and state changes (`matching`, `agreement`, `meetings`, `goals`, `concerns`, `pause`,
`review`, `health`, `closure`; built from `decision.py`); `decider.py` is the entry
(`decide`, `decide_deadline`, `evolve`, `fold`). Adding a command: docs/extending.md.

Nothing in this package performs I/O or imports Temporal, so every rule is testable in
milliseconds and the same fold rebuilds a relationship from the event store.
"""
