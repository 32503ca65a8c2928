"""Whatever a driver hands it, the model answers with findings, never a traceback or a hang."""

from __future__ import annotations

from dbc_harness.drivers.xhci.registers import DBC_REGS
from dbc_harness.fixtures.virtual import DebugHostError, VirtualXhci
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.virtual_helpers import MinimalDbcProducer

trbs = st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=24)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(out_trbs=trbs, in_trbs=trbs, send=st.binary(max_size=3000))
def test_garbage_trbs_give_findings_not_tracebacks(
    out_trbs: list[bytes], in_trbs: list[bytes], send: bytes
) -> None:
    with VirtualXhci(strict=False) as x:
        b = MinimalDbcProducer(x, ring_trbs=32)
        b.bring_up()
        b.events()
        for raw in out_trbs:
            b.out.put(raw[:12] + (int.from_bytes(raw[12:], "little") & ~1).to_bytes(4, "little"))
        for raw in in_trbs:
            b.inr.put(raw[:12] + (int.from_bytes(raw[12:], "little") & ~1).to_bytes(4, "little"))
        b.ring_doorbell(0)
        b.ring_doorbell(1)
        x.advance(1000)
        try:
            x.host.recv(1 << 16, timeout=0.001)
        except DebugHostError:
            pass
        try:
            x.host.send(send, timeout=0.001)
        except DebugHostError:
            pass
        b.events()
        x.advance(1000)
        assert all(f.rule and f.section for f in x.findings)


dbc_offsets = st.sampled_from(sorted({DBC_REGS.offset(n) for n in DBC_REGS.offsets} | {0x0C, 0x2C}))


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(
        st.tuples(dbc_offsets, st.integers(min_value=0, max_value=0xFFFF_FFFF)), max_size=30
    ),
    plug=st.booleans(),
)
def test_random_dbc_register_writes_never_crash(writes: list[tuple[int, int]], plug: bool) -> None:
    with VirtualXhci(strict=False, plugged=plug) as x:
        b = MinimalDbcProducer(x)
        b.program()
        for offset, value in writes:
            x.mmio.write32(b.base + offset, value)
            x.advance(5000)
        for name in DBC_REGS.registers:
            x.mmio.read32(b.base + DBC_REGS.offset(name))
        x.advance(200_000)
