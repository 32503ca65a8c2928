"""Deliberate mistakes in the reference C driver, each compiled in with one ``-DDBC_MUT_<NAME>``
switch, each flagged by the virtual bench with the right rule AND the right line of dbc.c.

The expected line is found through a ``@site:NAME`` marker comment in the source (never a
hard-coded number): the line of the register access that made the mistake, or, for a mistake
in memory the controller reads later, the access that handed it over (the DCE write, the
doorbell) or the line the driver was waiting at when the debug host read it (enumeration).
Deterministic bench, non-strict (the driver runs on after the finding); the unmutated driver
runs every scenario with 0 findings.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from dbc_harness.drivers.dbc import DbcError
from dbc_harness.drivers.native.build import MUTATIONS, build_reference, site_line
from dbc_harness.drivers.native.driver import NativeDbcDriver
from dbc_harness.fixtures.virtual import Finding, VirtualXhci

pytestmark = pytest.mark.timeout(120)


def bring_up(drv: NativeDbcDriver) -> None:
    drv.start(timeout=0.5)


def small_messages(drv: NativeDbcDriver) -> None:
    """More small writes than the OUT ring and the event ring hold (both wrap twice); the
    virtual host's buffer takes them, the driver's own waits let the controller run."""
    drv.start(timeout=0.5)
    for i in range(600):
        drv.write(b"%04d" % i, timeout=0.2)
        if i % 50 == 49:
            drv.flush(timeout=0.5)
    drv.flush(timeout=0.5)


def unaligned_large_message(drv: NativeDbcDriver) -> None:
    """100 bytes, then 70000: the second message starts off a 64 KiB line."""
    drv.start(timeout=0.5)
    drv.write(b"x" * 100, timeout=0.5)
    drv.write(b"y" * 70000, timeout=0.5)
    drv.flush(timeout=0.5)


#: mutation -> (rule the bench reports, @site marker of the line it names, scenario)
CASES: dict[str, tuple[str, str, Callable[[NativeDbcDriver], None]]] = {
    "PACKED_REGS": ("MMIO-RESERVED", "erstba", bring_up),
    "NO_DCCP": ("DBC-DCCP-MISSING", "dce", bring_up),
    "ASCII_STRINGS": ("DBC-STR-UTF16", "wait-configured", bring_up),
    "BITFIELD_MMIO": ("MMIO-SUBDWORD", "dce-bitfield", bring_up),
    "DB_TARGET": ("DBC-DB-TARGET", "doorbell", bring_up),
    "ERST_SIZE_0": ("DBC-ERSTSZ", "dce", bring_up),
    "STR_BLENGTH": ("DBC-STR-BLENGTH", "wait-configured", bring_up),
    "STRING0_EMPTY": ("DBC-STR0-LANGID", "wait-configured", bring_up),
    "EP_MPS": ("DBC-EP-MPS", "wait-configured", bring_up),
    "EP_TYPE": ("DBC-EP-TYPE", "wait-configured", bring_up),
    "EP_BURST": ("DBC-EP-BURST", "wait-configured", bring_up),
    "MMIO64_HIGH_FIRST": ("MMIO-64-ORDER", "erstba", bring_up),
    "CTX_MISALIGNED": ("DBC-DCCP-ALIGN", "dccp", bring_up),
    "EVENT_SEGMENT_SIZE": ("DBC-ERST-SEG-SIZE", "dce", bring_up),
    "ERDP_PAST_END": ("DBC-ERDP-RANGE", "erdp-past-end", small_messages),
    "LINK_NO_TOGGLE": ("DBC-RING-LOOP", "doorbell", small_messages),
    "TRB_CROSSES_64K": ("DBC-TRB-64K", "doorbell", unaligned_large_message),
}


def run(mutations: list[str], scenario: Callable[[NativeDbcDriver], None]) -> list[Finding]:
    x = VirtualXhci(strict=False)
    try:
        drv = NativeDbcDriver(
            x.mmio, x.dma, clock=x.clock, obj=build_reference(mutations=mutations)
        )
        try:
            scenario(drv)
        except DbcError:
            pass  # a broken driver may time out; what matters is what the bench saw
        finally:
            try:
                drv.close()
            except DbcError:
                drv.machine.close()
        return list(x.findings)
    finally:
        x.close()


def line_of(finding: Finding) -> int | None:
    match = re.match(r"dbc\.c:(\d+)\b", finding.origin or "")
    return int(match.group(1)) if match else None


def test_at_least_twelve_mutations_each_with_a_case() -> None:
    assert len(CASES) >= 12
    assert set(CASES) <= set(MUTATIONS)


@pytest.mark.parametrize("scenario", sorted({c[2] for c in CASES.values()}, key=str))
def test_the_reference_driver_has_no_finding_in_any_scenario(
    scenario: Callable[[NativeDbcDriver], None],
) -> None:
    assert run([], scenario) == []


@pytest.mark.parametrize("mutation", sorted(CASES))
def test_mutation_is_flagged_with_rule_and_source_line(mutation: str) -> None:
    rule, site, scenario = CASES[mutation]
    findings = run([mutation], scenario)
    want = site_line(site)
    seen = [(f.rule, line_of(f)) for f in findings]
    assert (rule, want) in seen, (
        f"{mutation}: expected {rule} at dbc.c:{want} (@site:{site}); the bench saw {seen}"
    )
    match = next(f for f in findings if f.rule == rule and line_of(f) == want)
    assert str(match).endswith(f"[driver code: {match.origin}]")
