"""Hypothesis stateful test: random sequences of writes, host reads of any size (splitting TRBs),
host transfers, target reads, halts, and every runtime fault of the virtual bench (unplug, hot
and warm port resets, SET_CONFIGURATION(0), both link errors, HCRST with and without the DbC
surviving, DCE cleared by another agent, surprise removal), on a bench configured as one fault
kind of :data:`~fixtures.virtual.faults.FAULT_KINDS` (every quirk, back-pressure each way, a
small event ring; each kind gets its own examples). One rule resets the controller while the
Transfer Events of completed transfers wait on the event ring (the driver has not polled since
the DbC wrote them): right after the recovery, every byte the host saw acknowledged must have
reached ``read()``; a driver that re-initialises without consuming those events fails it.

Checked at the end, exactly, both ways (:class:`~fixtures.ledger.Ledger`): what the
host received is the written messages in order, each whole unless reported undelivered, and
then exactly ``delivered`` bytes of it when the report says ``exact`` (else within
``delivered..delivered_max``); what the target read is every transfer the host saw succeed,
whole, in order, once. No message is reported twice; no spec finding; no DMA memory left.

Deterministic virtual time, bounded examples.
"""

from __future__ import annotations

import logging

import pytest
from dbc_harness.fixtures.virtual.faults import FAULT_KINDS, FaultKind
from dbc_harness.fixtures.virtual.host import HostDirection
from dbc_harness.harness.benchmarks.faults import FaultRun
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

#: runtime faults a rule can inject (the kinds with an ``inject`` action)
RUNTIME = sorted(name for name, k in FAULT_KINDS.items() if k.inject is not None)
#: the controller resets that can hit with completed transfers' events still on the event ring:
#: HCRST (on the kind's bench: the DbC dies, survives with SBR, or dies despite SBR), DCE
#: cleared by another agent, surprise removal
RESETS = ["hcrst", "dce_cleared", "surprise_removal"]
RESET_KINDS = {"hcrst", "hcrst_sbr", "hcrst_kills_dbc", "dce_cleared", "surprise_removal"}


def resets_for(kind: FaultKind) -> list[str]:
    """The resets a kind's examples inject with events waiting: a reset kind's own fault at
    least half the time (its examples exist to test it), else any reset."""
    return [kind.name] * 3 + RESETS if kind.name in RESET_KINDS else RESETS


#: host transfers that fill a 64 KiB TRB, end mid-TD or in a chained receive buffer's last TRB
HOST_LARGE = [65_536, 100_000, 150_000, 196_608]

payloads = st.one_of(
    st.binary(min_size=0, max_size=3000),
    st.integers(1020, 1030).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)),
    st.sampled_from([2048, 65535, 65536, 70_000]).map(lambda n: bytes([n % 251]) * n),
)


def machine_for(kind: FaultKind) -> type[RuleBasedStateMachine]:
    class DbcUnderFaults(RuleBasedStateMachine):
        run: FaultRun

        @initialize(seed=st.integers(0, 3))
        def bring_up(self, seed: int) -> None:
            # odd seeds: the host keeps no buffer of its own, so its reads split TRBs; seeds
            # 2 and 3: 192 KiB receive buffers, one TD of three chained TRBs each
            self.run = FaultRun(kind, seed, steps=0)
            self.run.drv.start(timeout=5.0)

        def alive(self) -> bool:
            return not self.run.removed

        @precondition(alive)
        @rule(data=payloads)
        def write(self, data: bytes) -> None:
            # sizes come from hypothesis, bytes from the run's random stream: equal payloads
            # would make the host's byte stream ambiguous to attribute
            key = self.run.rng.randbytes(len(data))
            mixed = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
            self.run.write(mixed.to_bytes(len(data), "little"))

        @precondition(alive)
        @rule(size=st.sampled_from([None, 1, 100, 1024, 1500, 70_000]))
        def host_reads(self, size: int | None) -> None:
            if self.run.host_reads:
                self.run.host_drain(max_bytes=size)

        @precondition(alive)
        @rule(size=st.one_of(st.integers(0, 5000), st.sampled_from(HOST_LARGE)))
        def host_sends(self, size: int) -> None:
            self.run.host_send(self.run.rng.randbytes(size))

        @rule()
        def target_reads(self) -> None:  # after a surprise removal too: completed data
            self.run.target_read()

        @precondition(lambda self: self.alive() and self.run.x.host.configured)
        @rule(direction=st.sampled_from(["in", "out"]))
        def host_halts(self, direction: HostDirection) -> None:
            self.run.x.host.halt(direction)
            self.run.halted.add(direction)
            self.run.poll()

        @precondition(lambda self: self.alive() and bool(self.run.halted))
        @rule()
        def host_clears_halts(self) -> None:
            run = self.run
            for direction in sorted(run.halted):
                if run.x.host.configured:
                    run.x.host.clear_halt(direction)
            run.halted.clear()
            run.poll()

        @precondition(alive)
        @rule(who=st.sampled_from(["host", "target", "nobody"]))
        def pause(self, who: str) -> None:
            """Back-pressure: the host (or the target) stops reading until the next pause."""
            self.run.host_reads = who != "host"
            self.run.target_reads = who != "target"

        @precondition(alive)
        @rule(name=st.sampled_from(RUNTIME))
        def fault(self, name: str) -> None:
            run = self.run
            run.host_reads = run.target_reads = True
            run.fault(FAULT_KINDS[name])

        @precondition(alive)
        @rule(
            name=st.sampled_from(resets_for(kind)),
            sizes=st.lists(st.sampled_from([1, 1000, 1024, 3000]), min_size=1, max_size=3),
        )
        def reset_with_events_waiting(self, name: str, sizes: list[int]) -> None:
            """The host's transfers completed and their Transfer Events wait on the event ring
            when the controller is reset, before the driver polled: right after the recovery,
            read() has returned every byte the host saw acknowledged."""
            run = self.run
            run.host_reads = run.target_reads = True
            waiting = run.fault_with_events_waiting(FAULT_KINDS[name], sizes)
            tally = run.ledger.check_in()
            assert tally.clean, (f"{name} with {waiting} event(s) waiting", tally.problems)

        def teardown(self) -> None:
            run = getattr(self, "run", None)
            if run is None:
                return
            try:
                run.finish()
            finally:
                findings = [str(f) for f in run.x.findings]
                leaked = run.close() - len(findings)
            tally = run.ledger.check()
            assert tally.clean, tally.problems
            assert findings == [] and leaked == 0

    DbcUnderFaults.__name__ = f"DbcUnderFaults_{kind.name}"
    return DbcUnderFaults


@pytest.mark.parametrize("name", sorted(FAULT_KINDS))
def test_exact_accounting_under_faults(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # recoveries log warnings by design
    run_state_machine_as_test(
        machine_for(FAULT_KINDS[name]),
        settings=settings(
            max_examples=8,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
