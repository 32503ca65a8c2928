"""Hypothesis stateful test: random sequences of writes, reads, unplug/replug, halts, port
resets and controller resets. What the debug host receives is exactly what was written, in
order, minus what the driver explicitly reported undelivered; what the host sends arrives
intact and in order.

Strict mode (any spec finding fails), deterministic virtual time, bounded examples.
"""

from __future__ import annotations

from typing import Literal

from dbc_harness.drivers.dbc import DbcDisconnected, DbcDriver, DbcState, DbcTimeout, DbcUndelivered
from dbc_harness.drivers.xhci.registers import CAPLENGTH, OPERATIONAL_REGS, USBCMD, read_register
from dbc_harness.fixtures.virtual import (
    DebugHostTimeout,
    HostNotConfigured,
    HostStall,
    HostTransferError,
    Quirks,
    TransferFault,
    VirtualXhci,
)
from dbc_harness.fixtures.virtual.host import HostDirection
from dbc_harness.fixtures.virtual.quirks import EventPointerMode
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

faults = st.lists(
    st.builds(
        TransferFault,
        st.sampled_from(["out", "in"]),
        st.integers(0, 12),
        st.sampled_from(["babble", "transaction_error"]),
    ),
    max_size=3,
)

payloads = st.one_of(
    st.binary(min_size=0, max_size=3000),
    st.integers(1020, 1030).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
    st.sampled_from([65535, 65536, 65537, 200_000]).map(lambda n: b"\x5a" * n),
)


class DbcUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.x: VirtualXhci
        self.drv: DbcDriver
        #: (message id, data) accepted by write(), in order
        self.written: list[tuple[int, bytes]] = []
        #: message id -> bytes that arrived before the failure (as reported)
        self.undelivered: dict[int, int] = {}
        self.host_got = bytearray()
        self.target_got = bytearray()
        self.host_sent = bytearray()
        #: endpoints the test halted on purpose (host names: "in", "out")
        self.halted: set[HostDirection] = set()

    @initialize(
        ids=st.sampled_from([(2, 3), (0, 1)]),
        pointers=st.sampled_from(["exact", "exact", "zero", "nonmonotonic"]),
        faults=faults,
        zlp=st.booleans(),
    )
    def bring_up(
        self,
        ids: tuple[int, int],
        pointers: EventPointerMode,
        faults: list[TransferFault],
        zlp: bool,
    ) -> None:
        quirks = Quirks(
            endpoint_ids=ids,
            transfer_event_pointer=pointers,
            transfer_faults=tuple(faults),
        )
        self.x = VirtualXhci(strict=True, quirks=quirks)
        self.drv = DbcDriver(self.x.mmio, self.x.dma, clock=self.x.clock, ring_trbs=64, zlp=zlp)
        self.drv.start(timeout=5.0)

    # -- helpers ---------------------------------------------------------------------------
    def note(self, exc: DbcUndelivered) -> None:
        for m in exc.undelivered:
            assert m.message_id not in self.undelivered, "a message reported twice"
            self.undelivered[m.message_id] = m.delivered

    def settle(self) -> None:
        """Run the driver until the host configured it again (after a disruption)."""
        clock = self.x.clock
        end = clock.monotonic() + 5.0
        while not (self.drv.state is DbcState.CONFIGURED and self.x.host.configured):
            assert clock.monotonic() < end, f"stuck in {self.drv.state.name}"
            try:
                self.drv.poll()
            except DbcUndelivered as exc:  # pragma: no cover - poll does not raise these
                self.note(exc)
            clock.sleep(0.001)
        self.halted.clear()

    def drain_host(self) -> None:
        """The debug host reads everything the target has sent so far. A STALL it did not
        cause (a transfer fault halted the endpoint) it clears, as a host would on EPIPE."""
        for _ in range(10_000):
            self.drv.poll()
            try:
                self.host_got += self.x.host.recv(1 << 20, timeout=0.002)
            except HostStall:
                if "in" in self.halted:
                    return
                self.x.host.clear_halt("in")
            except (DebugHostTimeout, HostNotConfigured):
                return

    def collect(self) -> None:
        """Take undelivered reports without writing."""
        for m in self.drv.take_undelivered():
            assert m.message_id not in self.undelivered
            self.undelivered[m.message_id] = m.delivered

    # -- rules -----------------------------------------------------------------------------
    @rule(data=payloads)
    def write(self, data: bytes) -> None:
        try:
            mid = self.drv.write(data, timeout=1.0)
        except DbcUndelivered as exc:
            self.note(exc)
            return
        except DbcTimeout:
            return  # not accepted (e.g. pipe halted and the ring full): nothing to expect
        self.written.append((mid, data))

    @rule()
    def host_reads(self) -> None:
        self.drain_host()

    @precondition(lambda self: "out" not in self.halted)
    @rule(data=st.binary(min_size=0, max_size=5000))
    def host_sends(self, data: bytes) -> None:
        xfer = self.x.host.submit(data)
        want = len(self.target_got) + len(data)
        end = self.x.clock.monotonic() + 2.0
        while len(self.target_got) < want and not (xfer.done and xfer.error is not None):
            try:
                self.target_got += self.drv.read(1 << 20, timeout=0.01)
            except DbcTimeout:
                assert self.x.clock.monotonic() < end, "host data did not arrive"
        try:
            self.x.host.wait(xfer, timeout=1.0)
        except HostTransferError:
            # Babble / Transaction Error on the wire: the host saw its transfer fail and the
            # endpoint halted; nothing of it may have reached read().
            assert len(self.target_got) == want - len(data)
            self.x.host.clear_halt("out")
            self.drv.poll()
            return
        self.host_sent += data

    @rule(direction=st.sampled_from(["in", "out"]))
    def host_halts(self, direction: HostDirection) -> None:
        self.x.host.halt(direction)
        self.halted.add(direction)
        self.drv.poll()

    @precondition(lambda self: bool(self.halted))
    @rule()
    def host_clears_halts(self) -> None:
        for direction in sorted(self.halted):
            self.x.host.clear_halt(direction)
        self.halted.clear()
        self.drv.poll()

    @rule()
    def unplug_replug(self) -> None:
        self.drain_host()
        self.x.host.unplug()
        self.drv.poll()
        self.x.host.plug()
        self.settle()
        self.collect()

    @rule(kind=st.sampled_from(["hot", "warm"]))
    def host_port_reset(self, kind: Literal["hot", "warm"]) -> None:
        self.drain_host()
        self.x.host.reset(kind)
        self.settle()
        self.collect()

    @rule()
    def controller_reset(self) -> None:
        self.drain_host()
        op = read_register(self.x.mmio, 0, CAPLENGTH)
        self.x.mmio.write32(op + OPERATIONAL_REGS.offset("USBCMD"), USBCMD.encode(HCRST=1))
        self.drv.poll()
        self.settle()
        self.collect()

    # -- checks ----------------------------------------------------------------------------
    def expected_prefix_ok(self) -> bytearray:
        """What the host got is a prefix of (written minus undelivered)."""
        expected = bytearray()
        for mid, data in self.written:
            expected += data[: self.undelivered.get(mid, len(data))]
        got = bytes(self.host_got)
        assert expected[: len(got)] == got, "host data differs from what was written"
        return expected

    @invariant()
    def host_sees_a_prefix(self) -> None:
        self.expected_prefix_ok()
        assert bytes(self.target_got) == bytes(self.host_sent)

    def teardown(self) -> None:
        try:
            if self.halted:
                self.host_clears_halts()
            self.drain_host()  # a TRB completes once the host has read its data
            try:
                self.drv.flush(timeout=1.0)
            except DbcDisconnected as exc:
                self.note(exc)
            expected = self.expected_prefix_ok()
            assert bytes(self.host_got) == bytes(expected), "data lost or duplicated"
            for m in self.drv.stop(timeout=1.0):
                self.undelivered.setdefault(m.message_id, m.delivered)
            assert self.x.dma.stats()["live_bytes"] == 0
            assert self.x.findings == []
        finally:
            self.x.close()


DbcUnderFaults.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDbcUnderFaults = DbcUnderFaults.TestCase
