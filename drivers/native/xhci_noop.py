"""The reference driver's generic xHCI host path (``reference/xhci_noop.c``) under the engine.

What native code can prove on a controller without a Debug Capability (QEMU's xHCIs, many
cards): :meth:`NativeXhciProbe.cap_walk` runs the C extended capability walk on the bench's
BAR0 (``-DBC_ENODEV``: "no Debug Capability on this controller", the expected answer there),
:meth:`NativeXhciProbe.no_op` brings the command ring up from C and submits No Op Commands
whose Command Completion Events the controller writes into the bench's DMA memory (through the
IOMMU under VFIO). The same :class:`~dbc_harness.drivers.native.Machine` path as
:class:`~dbc_harness.drivers.native.driver.NativeDbcDriver`: MMIO goes to the bench's ``mmio``,
DMA memory comes from its ``dma`` (mapped zero-copy), delays pass on its ``clock``::

    with NativeXhciProbe(claim.mmio, claim.dma) as probe:
        walk = probe.cap_walk()        # walk.status_name == "DBC_ENODEV" on QEMU
        report = probe.no_op(3)        # report.completions[i].success
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from dbc_harness.allocator.space import DmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.drivers.native.build import EXTRA_FLAGS, REFERENCE_DIR, REFERENCE_ENV
from dbc_harness.drivers.native.cc import compile_object
from dbc_harness.drivers.native.driver import ERROR_NAMES
from dbc_harness.drivers.native.environment import Environment, load_environment
from dbc_harness.drivers.native.errors import NativeError
from dbc_harness.drivers.native.runner import Machine, as_signed
from dbc_harness.drivers.xhci import trb
from dbc_harness.drivers.xhci.host import ExtendedCapability

XHCI_NOOP_SOURCE = REFERENCE_DIR / "xhci_noop.c"
#: xhci_noop.h
CAP_MAX = 32
NOOP_MAX = 64
_CAP_HEAD = struct.Struct("<10I")  # caplength ... broken_at
_CAP_ENTRY = struct.Struct("<5I")  # offset, id, dword0, dword1, dword2
_NOOP_HEAD = struct.Struct("<8I5Q")  # requested ... last_other_type, the five addresses
_NOOP_RESULT = struct.Struct("<3Q2I")  # command_trb, event_trb, pointer, code, slot_id
CAP_REPORT_SIZE = _CAP_HEAD.size + CAP_MAX * _CAP_ENTRY.size
NOOP_REPORT_SIZE = _NOOP_HEAD.size + NOOP_MAX * _NOOP_RESULT.size


class ReportLayoutMismatch(NativeError):
    """The object's report structs are not the size this module decodes (xhci_noop.h
    changed without this module, or a foreign object)."""


def build_xhci_noop() -> Path:
    """``reference/xhci_noop.c`` compiled with the reference driver's flags (cached)."""
    return compile_object(XHCI_NOOP_SOURCE, extra_flags=EXTRA_FLAGS, name="xhci_noop")


def status_name(status: int) -> str:
    """``"OK"`` or the dbc.h name of ``-status`` (``"DBC_ENODEV"``)."""
    return "OK" if status == 0 else ERROR_NAMES.get(-status, str(status))


@dataclass(frozen=True)
class CapabilityWalk:
    """What ``xhci_cap_walk`` found. ``extended`` compares equal to
    :func:`~dbc_harness.drivers.xhci.host.probe_capabilities`'s list for the same BAR0."""

    status: int
    extended: tuple[ExtendedCapability, ...]
    #: (dword1, dword2) of each entry (Supported Protocol: name string, port range)
    words: tuple[tuple[int, int], ...]
    total: int
    dbc_offset: int | None
    broken_at: int
    registers: dict[str, int]

    @property
    def status_name(self) -> str:
        return status_name(self.status)

    @property
    def dbc_status(self) -> str:
        """The same sentence as the Python probe's ``dbc_status``."""
        if self.dbc_offset is None:
            return "no Debug Capability on this controller"
        return f"Debug Capability at BAR0 + 0x{self.dbc_offset:x}"

    def protocols(self) -> list[tuple[str, int, int, int]]:
        """(name string, major.minor as 0xMMmm, first port, port count) of each Supported
        Protocol entry (7.2)."""
        out = []
        for cap, (w1, w2) in zip(self.extended, self.words, strict=True):
            if cap.capability_id == 2:
                name = w1.to_bytes(4, "little").decode("ascii", "replace")
                out.append((name, cap.dword0 >> 16, w2 & 0xFF, (w2 >> 8) & 0xFF))
        return out


@dataclass(frozen=True)
class NoOpCompletion:
    """One Command Completion Event (6.4.2.2) as the controller wrote it, read by C."""

    command_trb: int
    event_trb: int
    pointer: int
    completion_code: int
    slot_id: int

    @property
    def success(self) -> bool:
        return self.completion_code == trb.CompletionCode.Success

    @property
    def completion_name(self) -> str:
        try:
            return trb.CompletionCode(self.completion_code).name
        except ValueError:
            return f"code {self.completion_code}"


@dataclass(frozen=True)
class NoOpReport:
    """What ``xhci_noop`` did: ``completions`` in submission order."""

    status: int
    requested: int
    running: bool
    halted: bool
    page_size: int
    scratchpads: int
    other_events: int
    last_other_type: int
    addresses: dict[str, int]
    completions: tuple[NoOpCompletion, ...] = field(default=())

    @property
    def status_name(self) -> str:
        return status_name(self.status)


class NativeXhciProbe:
    """``xhci_noop.o`` in a :class:`Machine` on ``mmio`` (BAR0) / ``dma`` / ``clock``
    (``dma`` None: only :meth:`cap_walk` works).

    ``obj``: the object (default: :func:`build_xhci_noop`); ``env``: an Environment or ENV.py
    (default: the reference driver's, ``reference/env.py``); ``bar_phys``: where BAR0 sits in
    the machine's physical address space; ``machine``: more Machine options (budgets)."""

    def __init__(
        self,
        mmio: Any,
        dma: DmaSpace | None,
        clock: Clock = REAL_CLOCK,
        *,
        obj: str | Path | None = None,
        env: Environment | str | Path | None = None,
        bar_phys: int | None = None,
        machine: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(env, Environment):
            env = load_environment(env if env is not None else REFERENCE_ENV)
        options: dict[str, Any] = {"instructions": 50_000_000, "wall_time": 120.0}
        options.update(machine or {})
        self.machine = Machine(
            obj if obj is not None else build_xhci_noop(),
            env,
            mmio=mmio,
            dma=dma,
            clock=clock,
            bar_phys=bar_phys,
            name="xhci_noop",
            **options,
        )
        m = self.machine
        for symbol, size in (
            ("xhci_cap_report_size", CAP_REPORT_SIZE),
            ("xhci_noop_report_size", NOOP_REPORT_SIZE),
        ):
            found = m.read_u64(m.symbol(symbol))
            if found != size:
                raise ReportLayoutMismatch(f"{symbol} is {found} in the object, {size} here")
        self._cap = m.alloc(CAP_REPORT_SIZE, 64)
        self._noop = m.alloc(NOOP_REPORT_SIZE, 64)

    @property
    def log(self) -> list[str]:
        """Lines the C code logged (each capability, the verdict)."""
        return self.machine.log

    def _bar(self) -> tuple[int, int]:
        m = self.machine
        assert m.bar_phys is not None  # the machine has mmio
        return m.bar_phys, m.bar_size

    def cap_walk(self) -> CapabilityWalk:
        """``xhci_cap_walk`` on BAR0."""
        m = self.machine
        status = as_signed(m.call("xhci_cap_walk", *self._bar(), self._cap), 32)
        raw = m.read(self._cap, CAP_REPORT_SIZE)
        head = _CAP_HEAD.unpack_from(raw)
        names = ("CAPLENGTH", "HCSPARAMS1", "HCSPARAMS2", "HCCPARAMS1", "DBOFF", "RTSOFF")
        count, total, dbc, broken = head[6:10]
        entries = [
            _CAP_ENTRY.unpack_from(raw, _CAP_HEAD.size + i * _CAP_ENTRY.size)
            for i in range(min(count, CAP_MAX))
        ]
        return CapabilityWalk(
            status=status,
            extended=tuple(ExtendedCapability(off, cid, d0) for off, cid, d0, _, _ in entries),
            words=tuple((d1, d2) for *_, d1, d2 in entries),
            total=total,
            dbc_offset=dbc or None,
            broken_at=broken,
            registers=dict(zip(names, head[:6], strict=True)),
        )

    def no_op(self, count: int = 3) -> NoOpReport:
        """``xhci_noop``: ``count`` No Op Commands, each waited for; the controller is halted,
        reset and its memory given back before this returns."""
        m = self.machine
        status = as_signed(m.call("xhci_noop", *self._bar(), count, self._noop), 32)
        raw = m.read(self._noop, NOOP_REPORT_SIZE)
        (requested, completed, running, halted, page, pads, other, other_type,
         dcbaa, erst, cmd, evt, pad_mem) = _NOOP_HEAD.unpack_from(raw)  # fmt: skip
        results = tuple(
            NoOpCompletion(*_NOOP_RESULT.unpack_from(raw, _NOOP_HEAD.size + i * _NOOP_RESULT.size))
            for i in range(min(completed, NOOP_MAX))
        )
        return NoOpReport(
            status=status,
            requested=requested,
            running=bool(running),
            halted=bool(halted),
            page_size=page,
            scratchpads=pads,
            other_events=other,
            last_other_type=other_type,
            addresses={
                "DCBAA": dcbaa,
                "ERST": erst,
                "command ring": cmd,
                "event ring": evt,
                "scratchpads": pad_mem,
            },
            completions=results,
        )

    def close(self) -> None:
        self.machine.close()

    def __enter__(self) -> NativeXhciProbe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
