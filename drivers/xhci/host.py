"""The generic xHCI host path: capability probe, halt/reset, and a command ring + event ring that
answer No Op Commands with Command Completion Events.

This is the end-to-end proof that the layouts, the allocator and the binding layer agree with a
controller nobody here wrote (QEMU's qemu-xhci / nec-usb-xhci on the kernel bench, any real xHCI).
Every register and TRB field goes through :mod:`drivers.xhci.registers` / :mod:`drivers.xhci.trb`
/ :mod:`drivers.xhci.contexts`; every wait has a deadline on a :class:`~drivers.clock.Clock`.

Sequence (xHCI 1.2 section 4.2 "Host Controller Initialization"): clear USBCMD.R/S and wait for
USBSTS.HCH; set USBCMD.HCRST and wait for HCRST and USBSTS.CNR to clear; CONFIG.MaxSlotsEn;
DCBAAP (with the Scratchpad Buffer Array when HCSPARAMS2 asks for one); CRCR = ring | RCS;
interrupter 0: ERSTSZ, ERDP, ERSTBA (the ERSTBA write makes the controller read the ERST);
IMAN.IE; USBCMD.R/S + INTE. A No Op Command is written to the command ring and doorbell 0
(DB Target 0 = Host Controller command) is rung; the Command Completion Event is polled by its
Cycle bit and ERDP is advanced with EHB (RW1C) set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from dbc_harness.allocator.errors import DmaError
from dbc_harness.allocator.space import DmaBuffer, DmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.drivers.mmio import ALL_ONES, Mmio
from dbc_harness.drivers.xhci import registers as R
from dbc_harness.drivers.xhci import trb
from dbc_harness.drivers.xhci.contexts import ERST_ENTRY
from dbc_harness.drivers.xhci.errors import RingFull, XhciLayoutError
from dbc_harness.drivers.xhci.layout import Layout
from dbc_harness.drivers.xhci.ring import SEGMENT_ALIGN, SEGMENT_BOUNDARY, EventRing, ProducerRing

__all__ = [
    "Capabilities",
    "CapabilityListBroken",
    "CapabilityListLoops",
    "CapabilityReadsAllOnes",
    "CommandCompletion",
    "ExtendedCapability",
    "HostControllerError",
    "HostControllerTimeout",
    "XhciHost",
    "halt_controller",
    "probe_capabilities",
    "walk_extended_capabilities",
]

#: Bound on the extended capability walk, so a corrupt list cannot loop forever.
MAX_EXTENDED_CAPABILITIES = 256
#: spec 5.4.2: HCH within 16 ms of clearing R/S; be generous for emulators and slow parts.
HALT_TIMEOUT_S = 1.0
#: Linux waits up to 10 s for HCRST on some parts; 5 s is plenty for QEMU and common silicon.
RESET_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 2.0
_TRB = trb.TRB_SIZE


class HostControllerError(XhciLayoutError):
    """The controller did not behave as the xHCI spec says (or BAR0 reads all ones: the device
    is gone or memory decoding is off)."""


class HostControllerTimeout(HostControllerError):
    """A register or event did not reach the expected state before its deadline."""


class CapabilityListBroken(HostControllerError):
    """The extended capability list cannot be followed to its end. ``found``: the entries read
    before the break, in list order."""

    def __init__(self, message: str, found: list[ExtendedCapability]) -> None:
        super().__init__(message)
        self.found = found


class CapabilityListLoops(CapabilityListBroken):
    """A Next Capability Pointer leads back to an entry already read."""


class CapabilityReadsAllOnes(CapabilityListBroken):
    """An entry reads 0xFFFFFFFF: the device is gone (or memory decoding is off). ``offset``:
    that entry's BAR0 offset."""

    def __init__(self, message: str, found: list[ExtendedCapability], offset: int) -> None:
        super().__init__(message, found)
        self.offset = offset


@dataclass(frozen=True)
class ExtendedCapability:
    """One entry of the extended capability list (xHCI 1.2 section 7)."""

    #: byte offset in BAR0
    offset: int
    capability_id: int
    #: the first dword, for decoding by the capability's own layout
    dword0: int

    @property
    def name(self) -> str:
        return {
            R.XECP_ID_USB_LEGACY_SUPPORT: "USB Legacy Support",
            R.XECP_ID_SUPPORTED_PROTOCOL: "Supported Protocol",
            R.XECP_ID_DEBUG_CAPABILITY: "Debug Capability",
        }.get(self.capability_id, f"ID {self.capability_id}")


@dataclass(frozen=True)
class Capabilities:
    """The capability registers (5.3), decoded, and the extended capability list."""

    raw: dict[str, int]
    caplength: int
    hciversion: int
    max_slots: int
    max_intrs: int
    max_ports: int
    max_scratchpad_bufs: int
    ac64: bool
    dboff: int
    rtsoff: int
    extended: tuple[ExtendedCapability, ...] = field(default=())

    @property
    def dbc_offset(self) -> int | None:
        """Byte offset of the Debug Capability (ID 0x0A), None when the controller has none."""
        for cap in self.extended:
            if cap.capability_id == R.XECP_ID_DEBUG_CAPABILITY:
                return cap.offset
        return None

    @property
    def dbc_status(self) -> str:
        """A sentence for users: where the DbC is, or that there is none (an expected answer)."""
        if self.dbc_offset is None:
            return "no Debug Capability on this controller"
        return f"Debug Capability at BAR0 + 0x{self.dbc_offset:x}"

    def render(self) -> str:
        lines = [R.CAPABILITY_REGS.render(self.raw)]
        for cap in self.extended:
            line = f"  xECP +0x{cap.offset:x} {cap.name}"
            if cap.capability_id == R.XECP_ID_SUPPORTED_PROTOCOL:
                f = R.SUPPORTED_PROTOCOL.decode(cap.dword0)
                line += f" USB {f['major_revision']:x}.{f['minor_revision']:02x}"
            lines.append(line)
        lines.append(f"  {self.dbc_status}")
        return "\n".join(lines)


def walk_extended_capabilities(
    mmio: Mmio, first_offset: int, limit: int = MAX_EXTENDED_CAPABILITIES
) -> list[ExtendedCapability]:
    """Follow the Next Capability Pointers from ``first_offset`` (bytes; 0 = empty list), at most
    ``limit`` entries (a corrupt list of forward pointers ends there). The one walk of the code
    base (xHCI 1.2 section 7). CapabilityListLoops / CapabilityReadsAllOnes (both with the
    entries read so far) when the list cannot be followed."""
    found: list[ExtendedCapability] = []
    offset = first_offset
    seen: set[int] = set()
    while offset and len(found) < limit:
        if offset in seen:
            raise CapabilityListLoops(f"extended capability list loops back to 0x{offset:x}", found)
        seen.add(offset)
        value = mmio.read32(offset)
        if value == ALL_ONES:
            raise CapabilityReadsAllOnes(
                f"extended capability at 0x{offset:x} reads all ones", found, offset
            )
        f = R.EXTENDED_CAPABILITY.decode(value)
        found.append(ExtendedCapability(offset, f["capability_id"], value))
        step = f["next_capability_pointer"]
        offset = offset + 4 * step if step else 0
    return found


def probe_capabilities(mmio: Mmio) -> Capabilities:
    """Read and decode the capability registers and the extended capability list."""
    raw = R.CAPABILITY_REGS.read_all(mmio)
    if raw["HCSPARAMS1"] == ALL_ONES or raw["HCCPARAMS1"] == ALL_ONES:
        raise HostControllerError(
            "capability registers read all ones: device gone or MEM decoding off"
        )
    p1 = R.HCSPARAMS1.decode(raw["HCSPARAMS1"])
    p2 = R.HCSPARAMS2.decode(raw["HCSPARAMS2"])
    c1 = R.HCCPARAMS1.decode(raw["HCCPARAMS1"])
    caplength = raw["CAPLENGTH"]
    if caplength < 0x20:
        raise HostControllerError(f"CAPLENGTH 0x{caplength:x} is too small for an xHCI")
    return Capabilities(
        raw=raw,
        caplength=caplength,
        hciversion=raw["HCIVERSION"],
        max_slots=p1["max_slots"],
        max_intrs=p1["max_intrs"],
        max_ports=p1["max_ports"],
        max_scratchpad_bufs=(p2["max_scratchpad_bufs_hi"] << 5) | p2["max_scratchpad_bufs_lo"],
        ac64=bool(c1["AC64"]),
        dboff=R.DBOFF.get(raw["DBOFF"], "doorbell_array_offset"),
        rtsoff=R.RTSOFF.get(raw["RTSOFF"], "runtime_register_space_offset"),
        extended=tuple(walk_extended_capabilities(mmio, 4 * c1["xECP"])),
    )


def _op(name: str, caplength: int) -> tuple[int, Layout]:
    return caplength + R.OPERATIONAL_REGS.offset(name), R.OPERATIONAL_REGS.layout(name)


def _wait(
    clock: Clock, timeout: float, what: str, done: Callable[[], bool], *, poll: float = 0.0005
) -> None:
    deadline = clock.monotonic() + timeout
    while not done():
        if clock.monotonic() >= deadline:
            raise HostControllerTimeout(f"{what} not reached within {timeout:g} s")
        clock.sleep(poll)


def halt_controller(
    mmio: Mmio,
    clock: Clock = REAL_CLOCK,
    *,
    reset: bool = True,
    caplength: int | None = None,
    halt_timeout: float = HALT_TIMEOUT_S,
    reset_timeout: float = RESET_TIMEOUT_S,
) -> None:
    """Clear USBCMD.R/S and wait for USBSTS.HCH; then (``reset``) USBCMD.HCRST and wait for
    HCRST and USBSTS.CNR to clear. After this the controller does no DMA."""
    if caplength is None:
        caplength = R.read_register(mmio, 0, R.CAPLENGTH)
    cmd_off, usbcmd = _op("USBCMD", caplength)
    sts_off, usbsts = _op("USBSTS", caplength)
    cmd = mmio.read32(cmd_off)
    if cmd == ALL_ONES:
        raise HostControllerError("USBCMD reads all ones: device gone or MEM decoding off")
    if usbcmd.get(cmd, "RS"):
        mmio.write32(cmd_off, usbcmd.replace(cmd, RS=0, HCRST=0))
    _wait(
        clock,
        halt_timeout,
        "USBSTS.HCH = 1 (HCHalted)",
        lambda: usbsts.get(mmio.read32(sts_off), "HCH") == 1,
    )
    if not reset:
        return
    mmio.write32(cmd_off, usbcmd.replace(mmio.read32(cmd_off), HCRST=1, RS=0))
    _wait(
        clock,
        reset_timeout,
        "USBCMD.HCRST = 0 and USBSTS.CNR = 0 after reset",
        lambda: (
            usbcmd.get(mmio.read32(cmd_off), "HCRST") == 0
            and usbsts.get(mmio.read32(sts_off), "CNR") == 0
        ),
        poll=0.001,
    )


@dataclass(frozen=True)
class CommandCompletion:
    """One Command Completion Event (6.4.2.2) as the controller wrote it."""

    #: device address of the event TRB in the event ring
    event_address: int
    command_trb_pointer: int
    completion_code: int
    slot_id: int
    text: str

    @property
    def success(self) -> bool:
        return self.completion_code == trb.CompletionCode.Success


class XhciHost:
    """A minimal running host controller: command ring, event ring (interrupter 0), DCBAA.

    ``start()`` halts, resets and starts the controller; ``no_op()`` submits one No Op Command
    and returns its Command Completion Event; ``close()`` halts and resets it again and frees
    the DMA memory. A context manager.
    """

    def __init__(
        self,
        mmio: Mmio,
        dma: DmaSpace,
        clock: Clock = REAL_CLOCK,
        *,
        caps: Capabilities | None = None,
        command_ring_trbs: int = 16,
        event_ring_trbs: int = 16,
        below_4g: bool = False,
    ) -> None:
        self.mmio = mmio
        self.dma = dma
        self.clock = clock
        self.caps = caps or probe_capabilities(mmio)
        #: every DMA address below 4 GiB when AC64 = 0 (or ``below_4g`` asks for it)
        self.limit = None if self.caps.ac64 and not below_4g else 1 << 32
        self.command_ring_trbs = command_ring_trbs
        self.event_ring_trbs = event_ring_trbs
        self._buffers: list[DmaBuffer] = []
        self._cmd: ProducerRing | None = None
        self._evt: EventRing | None = None
        #: events other than Command Completion seen while waiting (e.g. Port Status Change)
        self.other_events: list[str] = []
        self.running = False
        #: start() wrote to the controller: close() must halt and reset it
        self._touched = False

    # -- memory --------------------------------------------------------------------------------
    def _alloc(self, size: int, align: int, boundary: int) -> DmaBuffer:
        try:
            buf = self.dma.alloc(size, align=align, boundary=boundary, limit=self.limit)
        except DmaError as e:
            raise HostControllerError(f"cannot allocate {size} bytes of DMA memory: {e}") from e
        self._buffers.append(buf)
        return buf

    def _ir0(self, name: str) -> tuple[int, Layout]:
        base = self.caps.rtsoff + R.INTERRUPTER_REGS_OFFSET
        return base + R.INTERRUPTER_REGS.offset(name), R.INTERRUPTER_REGS.layout(name)

    def _page_size(self) -> int:
        off, layout = _op("PAGESIZE", self.caps.caplength)
        bits_ = layout.get(self.mmio.read32(off), "page_size")
        return 1 << ((bits_ & -bits_).bit_length() - 1 + 12) if bits_ else 4096

    # -- bring-up ------------------------------------------------------------------------------
    def start(self) -> None:
        caps, mmio = self.caps, self.mmio
        self._touched = True
        halt_controller(mmio, self.clock, reset=True, caplength=caps.caplength)
        page = self._page_size()
        # DCBAA: MaxSlotsEn = 1 -> entries 0 (scratchpad array) and 1
        dcbaa = self._alloc(2 * 8, 64, page)
        if caps.max_scratchpad_bufs:
            n = caps.max_scratchpad_bufs
            array = self._alloc(8 * n, 64, page)
            for i in range(n):
                pad = self._alloc(page, page, page)
                array.view[8 * i : 8 * i + 8] = pad.device_address.to_bytes(8, "little")
            dcbaa.view[0:8] = array.device_address.to_bytes(8, "little")
        self._cmd = ProducerRing(
            self._alloc(self.command_ring_trbs * _TRB, SEGMENT_ALIGN, SEGMENT_BOUNDARY),
            self.command_ring_trbs,
            name="command",
        )
        self._evt = EventRing(
            self._alloc(self.event_ring_trbs * _TRB, SEGMENT_ALIGN, SEGMENT_BOUNDARY),
            self._alloc(ERST_ENTRY.size, SEGMENT_ALIGN, page),
            self.event_ring_trbs,
        )
        off, layout = _op("CONFIG", caps.caplength)
        mmio.write32(off, layout.replace(mmio.read32(off), max_slots_en=1))
        off, layout = _op("DCBAAP", caps.caplength)
        R.write_register(
            mmio,
            off,
            layout,
            layout.encode(device_context_base_address_array_pointer=dcbaa.device_address),
        )
        off, layout = _op("CRCR", caps.caplength)
        R.write_register(
            mmio, off, layout, layout.encode(command_ring_pointer=self._cmd.base, RCS=self._cmd.pcs)
        )
        off, layout = self._ir0("ERSTSZ")
        mmio.write32(off, layout.replace(mmio.read32(off), event_ring_segment_table_size=1))
        off, layout = self._ir0("ERDP")
        R.write_register(
            mmio, off, layout, layout.encode(event_ring_dequeue_pointer=self._evt.dequeue_pointer)
        )
        off, layout = self._ir0("ERSTBA")
        R.write_register(
            mmio,
            off,
            layout,
            layout.encode(event_ring_segment_table_base_address=self._evt.erst_address),
        )
        off, layout = self._ir0("IMAN")
        mmio.write32(off, layout.replace(mmio.read32(off), IE=1, IP=1))
        off, layout = _op("USBCMD", caps.caplength)
        mmio.write32(off, layout.replace(mmio.read32(off), RS=1, INTE=1, HCRST=0))
        sts_off, usbsts = _op("USBSTS", caps.caplength)
        _wait(
            self.clock,
            HALT_TIMEOUT_S,
            "USBSTS.HCH = 0 (running)",
            lambda: usbsts.get(mmio.read32(sts_off), "HCH") == 0,
        )
        self.running = True

    # -- command ring --------------------------------------------------------------------------
    def _enqueue_command(self, layout: Layout, **fields: int) -> int:
        """Write one command TRB with the current Producer Cycle State; returns its address.
        HostControllerError when every slot waits for its Command Completion Event."""
        assert self._cmd is not None
        try:
            return self._cmd.enqueue(layout, **fields)
        except RingFull as e:
            raise HostControllerError(f"command ring full: {e}") from e

    def ring_command_doorbell(self) -> None:
        self.mmio.write32(self.caps.dboff, R.DOORBELL.encode(db_target=0, db_stream_id=0))

    def no_op(self, timeout: float = COMMAND_TIMEOUT_S) -> CommandCompletion:
        """Submit one No Op Command (TRB type 23) and wait for its Command Completion Event."""
        if not self.running:
            raise HostControllerError("start() the controller before submitting commands")
        address = self._enqueue_command(trb.NO_OP_COMMAND)
        self.ring_command_doorbell()
        deadline = self.clock.monotonic() + timeout
        while True:
            event = self._next_event()
            if event is not None:
                if event.command_trb_pointer == address:
                    assert self._cmd is not None  # _enqueue_command used it
                    self._cmd.complete(address)
                    return event
                self.other_events.append(f"unexpected completion: {event.text}")
            elif self.clock.monotonic() >= deadline:
                raise HostControllerTimeout(
                    f"no Command Completion Event for the No Op Command at 0x{address:x} "
                    f"within {timeout:g} s"
                )
            else:
                self.clock.sleep(0.0001)

    # -- event ring ----------------------------------------------------------------------------
    def _next_event(self) -> CommandCompletion | None:
        """Consume TRBs at the dequeue index; return the first Command Completion Event."""
        assert self._evt is not None
        while (event := self._evt.pop()) is not None:
            at, kind, fields = event
            text = trb.render_fields(kind, fields)
            self._write_erdp()
            if kind == trb.TRBType.CommandCompletionEvent:
                return CommandCompletion(
                    at,
                    fields["command_trb_pointer"],
                    int(fields["completion_code"]),
                    fields["slot_id"],
                    text,
                )
            self.other_events.append(text)
        return None

    def _write_erdp(self) -> None:
        assert self._evt is not None
        off, layout = self._ir0("ERDP")
        value = layout.encode(event_ring_dequeue_pointer=self._evt.dequeue_pointer, EHB=1)
        R.write_register(self.mmio, off, layout, value)

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Halt and reset the controller (no DMA after this), then free the memory."""
        try:
            if self._touched:
                halt_controller(self.mmio, self.clock, reset=True, caplength=self.caps.caplength)
        finally:
            self.running = self._touched = False
            for buf in self._buffers:
                if not buf.freed:
                    self.dma.free(buf)
            self._buffers.clear()

    def __enter__(self) -> XhciHost:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
