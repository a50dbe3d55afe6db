"""Matching: pairing rules and quotas, rounds, mentor load, profiles."""
