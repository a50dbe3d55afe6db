"""Running it: the CLI, `mentorflow dev`, deployment files, metrics, faults, the README, typing and layers."""
