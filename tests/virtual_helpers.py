"""Shared test helper: the minimal register-level DbC setup lives in fixtures.virtual.minimal
(the model benchmark uses it too)."""

from dbc_harness.fixtures.virtual.minimal import DbcBench, Event, Ring

__all__ = ["DbcBench", "Event", "Ring"]
