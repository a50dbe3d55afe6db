"""Helpers, fixtures' pieces and stand-in peers shared by the tests (no tests here)."""
