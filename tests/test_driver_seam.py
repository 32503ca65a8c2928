"""Every DbC driver satisfies the driver seam (``drivers/dbc_api.py``), the one the session, the
USB/IP export and the pytest plugin are typed against.

The structural check is mypy's (``tests/test_typecheck.py`` checks this file: ``_seam`` stops
type-checking when a driver loses or changes a member); the test checks the same members exist
at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbc_harness.drivers.dbc import DbcDriver
from dbc_harness.drivers.dbc_api import DbcDriverApi, TargetStream
from dbc_harness.drivers.native.driver import NativeDbcDriver

if TYPE_CHECKING:
    from dbc_harness.fixtures.lab.driver import RemoteSession  # labgrid: the [lab] extra

SEAM = ("write", "read", "state", "start", "flush", "stop")


def _seam(
    python: DbcDriver, native: NativeDbcDriver, farm: RemoteSession
) -> tuple[DbcDriverApi, DbcDriverApi, TargetStream]:
    return python, native, farm


def test_both_drivers_offer_every_member_of_the_seam() -> None:
    for cls in (DbcDriver, NativeDbcDriver):
        assert [m for m in SEAM if not hasattr(cls, m)] == [], cls.__name__
