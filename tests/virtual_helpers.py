"""Shared test helper: the minimal register-level DbC producer lives in fixtures.virtual.minimal
(the model benchmark uses it too)."""

from dbc_harness.fixtures.virtual.minimal import Event, MinimalDbcProducer

__all__ = ["Event", "MinimalDbcProducer"]
