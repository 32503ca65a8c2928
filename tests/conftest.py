"""Fixtures shared by the test files: the driver kinds a scenario runs against."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.driver_kinds import KINDS, DriverFactory


@pytest.fixture(params=KINDS)
def make_driver(request: pytest.FixtureRequest) -> Iterator[DriverFactory]:
    """Makes DbC drivers of one kind (``python``, ``native``: the test id names it) on a
    virtual controller: ``make_driver(x, **options)`` (not started),
    ``make_driver.started(x, **options)``. A test parametrizes it indirectly to run a kind
    alone (``indirect=["make_driver"]``)."""
    factory = DriverFactory(request.param)
    yield factory
    factory.release()
