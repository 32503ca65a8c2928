"""``dbc-harness bench faults``: every fault kind of the virtual bench, with exact accounting.

For each kind of :data:`~fixtures.virtual.faults.FAULT_KINDS` and a few seeds, the real driver
runs on the deterministic virtual bench (virtual time, one thread) against a debug host peer:
random writes (0 bytes to 70 KB, multiples of 1024 included), host reads of random sizes
(partial TRBs when the host keeps no buffer of its own: every odd seed), host transfers (some
larger than 64 KiB, ending in a short or zero-length packet) into 1 KiB receive buffers or, from
seed 2 on, into 192 KiB ones (one TD of three chained TRBs: transfers end in its first, middle
or last TRB), and ``read()`` calls; the fault is injected mid-traffic with data in flight both
ways, the host recovers as a real one would, traffic goes on, and the run ends with ``flush()`` and
``stop()``. A caller that retransmits ``data[delivered:]`` of every exact undelivered report is
modelled: its retransmissions are ordinary messages of the ledger. Keys:

* ``fault_kinds`` (count) and ``kinds`` (names), ``seeds``, ``runs``;
* ``messages``, ``bytes``: writes and host transfers, both ways;
* ``lost_bytes``: acknowledged data that did not arrive (not reported, or reported delivered);
* ``duplicated_bytes``: bytes that arrived twice or that nothing explains (a retransmission of
  ``data[delivered:]`` after an exact report that under-counted repeats them);
* ``misreported_bytes``: distance between what arrived and what a report said (outside its
  ``delivered..delivered_max`` range);
* ``inexact_reports``: undelivered reports that gave a range (the host went away while reading
  a TRB: no part tells software how much of it arrived);
* ``hangs``: a recovery or flush that did not finish within its deadline; ``tracebacks``:
  unexpected exceptions; ``findings``: spec findings of the model (a driver mistake);
* ``per_kind``: the same per fault kind; ``problems``: the first few things that went wrong.

Goal: 0 lost, 0 duplicated, 0 misreported, 0 hangs, 0 tracebacks, for every kind.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Sequence
from typing import Any

from dbc_harness.drivers.dbc import (
    DbcDriver,
    DbcError,
    DbcState,
    DbcSurpriseRemoval,
    DbcTimeout,
    DbcUndelivered,
    UndeliveredMessage,
)
from dbc_harness.drivers.xhci.contexts import DBC_MAX_PACKET_SIZE
from dbc_harness.drivers.xhci.trb import TRB_SIZE
from dbc_harness.fixtures.ledger import Ledger, Tally
from dbc_harness.fixtures.virtual import (
    DebugHostError,
    DebugHostTimeout,
    HostNotConfigured,
    HostStall,
    HostTransferError,
    VirtualXhci,
)
from dbc_harness.fixtures.virtual.faults import FAULT_KINDS, FaultKind
from dbc_harness.fixtures.virtual.host import HostDirection

#: wall-clock limit of one run (a run that needs more counts as a hang)
RUN_LIMIT_S = 60.0
_SIZES = (0, 1, 7, 100, 1000, 1023, 1024, 1025, 2048, 3000, 4096, 9000, 65535, 65536, 70_000)
#: host transfer sizes: short ones, and ones that fill a 64 KiB TRB, end in the middle or the
#: last TRB of a chained 192 KiB receive buffer, or fill it exactly
_HOST_SIZES = (0, 10, 1024, 2048, 3000, 5000, 65_536, 100_000, 150_000, 196_608)
#: receive buffer of the runs from seed 2 on: one TD of three chained 64 KiB TRBs
CHAINED_IN_BUFFER = 192 << 10


def events_waiting(x: VirtualXhci) -> int:
    """Events the DbC wrote that software has not consumed yet: the model's enqueue pointer
    against DCERDP (one event ring segment, as every driver uses; 0 while the DbC is off)."""
    ring = x.event_ring
    if not ring.valid or len(ring.segments) != 1:
        return 0
    ((_, trbs),) = ring.segments
    return (ring.enqueue_address - (x.regs.dcerdp & ~0xF)) // TRB_SIZE % trbs


class _Hang(Exception):
    """A recovery or a flush did not finish within its deadline."""


class FaultRun:
    """One run: one fault kind (its quirks and options), one seed; the stateful test drives
    the same peer with hypothesis."""

    def __init__(self, kind: FaultKind, seed: int, steps: int) -> None:
        self.kind = kind
        self.rng = random.Random(f"{kind.name}/{seed}")
        self.steps = steps
        opts: dict[str, Any] = {"strict": False, **kind.bench}
        if seed % 2:
            opts.setdefault("host_buffer", 0)  # TRBs stay on the wire: host reads split them
        self.x = VirtualXhci(quirks=kind.quirks, **opts)
        driver: dict[str, Any] = dict(kind.driver)
        if seed >= 2:
            driver.setdefault("in_buffer_size", CHAINED_IN_BUFFER)
        #: receive buffers above 1 KiB: a transfer that is a multiple of 1024 bytes ends with
        #: the host's zero-length packet (else the driver cannot know it ended, by design)
        self.zlp = driver.get("in_buffer_size", DBC_MAX_PACKET_SIZE) > DBC_MAX_PACKET_SIZE
        self.drv = DbcDriver(self.x.mmio, self.x.dma, clock=self.x.clock, ring_trbs=64,
                             **driver)  # fmt: skip
        self.ledger = Ledger()
        self.retransmit: list[bytes] = []
        self.removed = False
        self.halted: set[HostDirection] = set()
        self.host_reads = True
        self.target_reads = True
        self.inexact = 0
        self.deadline = time.monotonic() + RUN_LIMIT_S

    # -- driver side ------------------------------------------------------------------------
    def note(self, messages: tuple[UndeliveredMessage, ...]) -> None:
        self.ledger.note(messages)
        for m in messages:
            if not m.exact:
                self.inexact += 1
            elif m.delivered < len(m.data):
                self.retransmit.append(m.data[m.delivered :])

    def poll(self) -> None:
        if self.removed or self.drv.state is DbcState.DISABLED:
            return
        try:
            self.drv.poll()
        except DbcSurpriseRemoval:
            self.removed = True

    def write(self, data: bytes) -> None:
        for _ in range(3):
            try:
                mid = self.drv.write(data, timeout=0.2)
            except DbcUndelivered as exc:
                self.note(exc.undelivered)
                continue  # nothing was accepted: try again
            except DbcSurpriseRemoval as exc:
                self.note(exc.undelivered)
                self.removed = True
                return
            except DbcTimeout:
                return  # not accepted (no host, or back-pressure): nothing to expect
            self.ledger.written.append((mid, data))
            return

    def target_read(self) -> None:
        while True:
            try:
                self.ledger.target_got += self.drv.read(1 << 20, timeout=0.002)
            except DbcTimeout:
                return
            except DbcSurpriseRemoval as exc:
                self.note(exc.undelivered)
                self.removed = True
                return

    # -- host side --------------------------------------------------------------------------
    def host_drain(self, max_bytes: int | None = None, rounds: int = 10_000) -> None:
        """The host reads what the target sent (sizes that split TRBs when ``max_bytes``)."""
        host = self.x.host
        for _ in range(rounds):
            self.poll()
            size = max_bytes or self.rng.choice((100, 1000, 1500, 4096, 1 << 20))
            try:
                self.ledger.host_got += host.recv(size, timeout=0.002)
            except HostStall:
                if "in" in self.halted:
                    return
                host.clear_halt("in")  # a transfer fault halted it: clear, as on EPIPE
            except (DebugHostTimeout, HostNotConfigured):
                return
            if max_bytes:
                return

    def host_send(self, data: bytes) -> None:
        host = self.x.host
        if "out" in self.halted:
            return
        try:
            xfer = host.submit(data, zlp=self.zlp)
        except (HostStall, HostNotConfigured):
            return
        try:
            host.wait(xfer, timeout=0.05)
        except DebugHostTimeout as exc:
            self.ledger.sent.append((data, False, exc.transferred))
        except HostTransferError:
            self.ledger.sent.append((data, False, xfer.pos))
            host.clear_halt("out")
        except HostStall:
            with self.x.operation():
                if xfer in host.tx:
                    host.tx.remove(xfer)  # cancelled, like a timed-out transfer
            self.ledger.sent.append((data, False, xfer.pos))
        except HostNotConfigured:
            self.ledger.sent.append((data, False, xfer.pos))
        else:
            self.ledger.sent.append((data, True, len(data)))
        if self.target_reads:
            self.target_read()

    # -- recovery ---------------------------------------------------------------------------
    def settle(self, timeout: float = 5.0) -> None:
        """Run the driver until the host configured it again."""
        clock = self.x.clock
        end = clock.monotonic() + timeout
        while not (self.drv.state is DbcState.CONFIGURED and self.x.host.configured):
            if self.removed:
                return
            if clock.monotonic() > end:
                raise _Hang(f"not configured again within {timeout} s ({self.drv.state.name})")
            self.poll()
            clock.sleep(0.001)

    def heal(self) -> None:
        """What a host does by itself: plug the cable back in (the unplug quirk)."""
        if not self.removed and not self.x.host.plugged:
            self.host_drain()
            self.kind.recover(self.x)
            self.settle()

    def fault(self, kind: FaultKind) -> None:
        """Inject a runtime fault now, with data in flight both ways, and recover from it (the
        stateful test's rule)."""
        x = self.x
        if kind.inject is None or self.removed or not x.host.configured:
            return
        xfer = self._in_flight()
        kind.inject(x)
        self._end_halts()
        self._end_transfer(xfer, 0.0)
        self._after(kind)

    def _end_halts(self) -> None:
        """The host's own halts end with a fault that took its configuration away; where the
        device stayed configured (HCRST with SBR = 1: the DbC survives, DCCTRL.HIT/HOT too),
        the host clears them itself, as it would after any fault."""
        x = self.x
        for direction in sorted(self.halted):
            still = x.dbc.hit if direction == "out" else x.dbc.hot
            if still and x.host.configured:
                x.host.clear_halt(direction)
        self.halted.clear()

    def _after(self, kind: FaultKind) -> None:
        """After an injected fault: the host reads what it had taken off the wire, the driver
        notices, the host recovers (plug in again, warm reset...) and configures it again."""
        self.host_drain()
        for _ in range(3):
            self.poll()
        if kind.terminal:
            self.target_read()
            return
        kind.recover(self.x)
        self.heal()
        self.settle()

    def fault_with_events_waiting(self, kind: FaultKind, sizes: Sequence[int]) -> int:
        """The stateful test's sharpest rule: the host reads whole messages and sends transfers
        of ``sizes``; the DbC completes the TDs and writes their Transfer Events; THEN the fault
        hits, before the driver polled. A driver that re-initialises without consuming those
        events first loses acknowledged host -> target data (``read()`` never returns it) and
        reports delivered messages undelivered. Afterwards the target reads what arrived.
        Returns the number of events that waited on the event ring at the fault."""
        x = self.x
        if kind.inject is None or self.removed or not x.host.configured:
            return 0
        self.target_read()  # room on the IN ring; the driver primes it again
        self.poll()
        if "in" not in self.halted:
            for size in sizes[:2]:
                self.write(self.rng.randbytes(size))
            for _ in range(8):  # no poll in between: the events stay on the ring
                try:
                    self.ledger.host_got += x.host.recv(1 << 20, timeout=0.002)
                except (DebugHostTimeout, HostNotConfigured, HostStall):
                    break
        if "out" not in self.halted and x.host.configured:
            for size in sizes:
                try:
                    xfer = x.host.submit(self.rng.randbytes(size), zlp=self.zlp)
                except (HostStall, HostNotConfigured):
                    break
                self._end_transfer(xfer, 0.05)  # the model runs; the driver does not
        waiting = events_waiting(x)
        kind.inject(x)
        self._end_halts()
        self._after(kind)
        self.target_read()
        return waiting

    def _in_flight(self) -> Any:
        """Data in flight both ways: writes the host has not read (one TRB half read), a host
        transfer landing; the model runs a little so completions wait on the event ring."""
        x = self.x
        for _ in range(3):
            self.write(self.rng.randbytes(self.rng.choice((3000, 1024, 70_000))))
        self.host_drain(max_bytes=self.rng.choice((100, 1500)))
        if not x.host.configured or "out" in self.halted:
            return None
        xfer = x.host.submit(self.rng.randbytes(3000))
        x.advance(1)
        return xfer

    def _end_transfer(self, xfer: Any, timeout: float) -> None:
        """Record how the host transfer from :meth:`_in_flight` ended."""
        if xfer is None:
            return
        x = self.x
        try:
            x.host.wait(xfer, timeout=timeout)
        except DebugHostTimeout as exc:
            self.ledger.sent.append((bytes(xfer.data), False, exc.transferred))
        except DebugHostError as exc:
            with x.operation():
                if xfer in x.host.tx:
                    x.host.tx.remove(xfer)  # cancelled
            self.ledger.sent.append((bytes(xfer.data), False, xfer.pos))
            if (
                isinstance(exc, HostTransferError)
                and "out" not in self.halted
                and x.host.configured
            ):
                x.host.clear_halt("out")
        else:
            self.ledger.sent.append((bytes(xfer.data), True, len(xfer.data)))

    def inject(self) -> None:
        kind, x = self.kind, self.x
        xfer = self._in_flight()
        if kind.halt is not None:
            x.host.halt(kind.halt)
            self.halted.add(kind.halt)
        if kind.inject is not None:
            kind.inject(x)
        self._end_transfer(xfer, 0.0 if kind.inject else 0.05)
        # the host keeps what it had taken off the wire: read it before it re-enumerates
        self.host_drain()
        self.host_reads = not kind.host_stops_reading
        self.target_reads = not kind.target_stops_reading
        if kind.terminal:
            self.poll()
            self.target_read()
            return
        if not kind.hold_steps:
            self.release()

    def release(self) -> None:
        kind, x = self.kind, self.x
        for _ in range(5):
            self.poll()
        for direction in sorted(self.halted):
            x.host.clear_halt(direction)
        self.halted.clear()
        self.host_reads = self.target_reads = True
        if kind.inject is not None and not kind.terminal:
            kind.recover(x)
        self.heal()  # a quirk may have pulled the cable meanwhile
        self.settle()

    # -- the run ----------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        op = rng.random()
        if self.retransmit and op < 0.3:
            self.write(self.retransmit.pop(0))
        elif op < 0.45:
            self.write(rng.randbytes(rng.choice(_SIZES)))
        elif op < 0.6:
            for _ in range(rng.randint(2, 8)):
                self.write(rng.randbytes(rng.randint(0, 3000)))
        elif op < 0.8:
            if self.host_reads:
                self.host_drain(max_bytes=rng.choice((None, 100, 1500)))
            else:
                self.poll()
        else:
            self.host_send(rng.randbytes(rng.choice(_HOST_SIZES)))

    def run(self) -> None:
        self.drv.start(timeout=5.0)
        inject_at = self.steps // 3
        release_at = inject_at + self.kind.hold_steps
        for i in range(self.steps):
            if time.monotonic() > self.deadline:
                raise _Hang(f"run took more than {RUN_LIMIT_S} s")
            if i == inject_at:
                self.inject()
            elif i == release_at and self.kind.hold_steps:
                self.release()
            if self.removed:
                break
            self.step()
            self.heal()
        self.finish()

    def finish(self) -> None:
        x = self.x
        if not self.removed:
            for direction in sorted(self.halted):
                x.host.clear_halt(direction)
            self.halted.clear()
            self.host_reads = self.target_reads = True
            while self.retransmit:
                self.write(self.retransmit.pop(0))
            for _ in range(3):
                self.host_drain()
                try:
                    self.drv.flush(timeout=1.0)
                    break
                except DbcUndelivered as exc:
                    self.note(exc.undelivered)
                except DbcSurpriseRemoval as exc:
                    self.note(exc.undelivered)
                    self.removed = True
                    break
                except DbcTimeout:
                    continue
            else:
                raise _Hang("flush() did not finish after the host read everything")
            self.target_read()
        else:
            self.target_read()
        self.note(self.drv.stop(timeout=1.0))
        self.host_drain()  # what the host took off the wire before the DbC went down

    def close(self) -> int:
        findings = len(self.x.findings)
        if not self.removed and self.x.dma.stats()["live_bytes"]:
            findings += 1  # DMA memory left behind
        self.x.close()
        return findings


def run_kind(kind: FaultKind, seed: int, steps: int) -> dict[str, Any]:
    """One run; returns its tally as a dict (plus hangs, tracebacks, findings)."""
    r = FaultRun(kind, seed, steps)
    hangs = tracebacks = 0
    problems: list[str] = []
    try:
        r.run()
    except _Hang as exc:
        hangs = 1
        problems.append(f"{kind.name}/{seed}: hang: {exc}")
    except (DbcError, DebugHostError, AssertionError, ValueError, RuntimeError, KeyError) as exc:
        tracebacks = 1
        tb = traceback.format_exc().strip().splitlines()
        problems.append(f"{kind.name}/{seed}: {type(exc).__name__}: {exc} ({tb[-3].strip()})")
    findings = r.close()
    tally = r.ledger.check()
    problems.extend(f"{kind.name}/{seed}: {p}" for p in tally.problems)
    return {
        "tally": tally,
        "hangs": hangs,
        "tracebacks": tracebacks,
        "findings": findings,
        "inexact_reports": r.inexact,
        "problems": problems,
    }


def run(quick: bool = False, kinds: list[str] | None = None) -> dict[str, Any]:
    seeds = (0, 1) if quick else (0, 1, 2, 3)
    steps = 14 if quick else 50
    names = kinds if kinds is not None else list(FAULT_KINDS)
    t0 = time.perf_counter()
    total = Tally()
    per_kind: dict[str, dict[str, int]] = {}
    hangs = tracebacks = findings = inexact = 0
    problems: list[str] = []
    for name in names:
        kind = FAULT_KINDS[name]
        k_tally = Tally()
        k = {"hangs": 0, "tracebacks": 0, "findings": 0, "inexact_reports": 0}
        for seed in seeds:
            res = run_kind(kind, seed, steps)
            k_tally.add(res["tally"])
            for key in k:
                k[key] += res[key]
            problems.extend(res["problems"][:3])
        total.add(k_tally)
        hangs += k["hangs"]
        tracebacks += k["tracebacks"]
        findings += k["findings"]
        inexact += k["inexact_reports"]
        per_kind[name] = {
            "messages": k_tally.messages,
            "bytes": k_tally.bytes,
            "lost_bytes": k_tally.lost_bytes,
            "duplicated_bytes": k_tally.duplicated_bytes,
            "misreported_bytes": k_tally.misreported_bytes,
            **k,
        }
    return {
        "fault_kinds": len(names),
        "kinds": names,
        "seeds": len(seeds),
        "steps": steps,
        "runs": len(names) * len(seeds),
        "messages": total.messages,
        "bytes": total.bytes,
        "lost_bytes": total.lost_bytes,
        "duplicated_bytes": total.duplicated_bytes,
        "misreported_bytes": total.misreported_bytes,
        "reported_twice": total.reported_twice,
        "inexact_reports": inexact,
        "hangs": hangs,
        "tracebacks": tracebacks,
        "findings": findings,
        "seconds": round(time.perf_counter() - t0, 2),
        "per_kind": per_kind,
        "problems": problems[:20],
    }
