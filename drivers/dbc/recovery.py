"""Following the link after each event-ring drain, and the recovery actions: connect and
configure, unplug/replug, host port reset, DCR dropping, HIT/HOT halts.

* :class:`LinkFollower`: reads DCPORTSC when DCCTRL or a Port Status Change Event says
  something changed, moves the :class:`~drivers.dbc.state.DbcState` (ENABLED -> CONNECTED ->
  CONFIGURED and back), acknowledges DRC and the DCPORTSC change bits, holds a halted pipe
  and rings its doorbell once the host cleared the halt. (DCE dropping by itself and surprise
  removal are handled by the driver: both need the whole bring-up or none of it.)

* :func:`reinit_pipes`: flush both pipes (messages in flight are reported undelivered, received
  data stays readable; the caller consumed every event the controller wrote first, so nothing
  the host acknowledged is lost or reported twice), re-initialise both rings and both endpoint
  contexts, so the controller starts from clean rings when the host configures us again
  (otherwise rings fill up after a few reconnects, a known field problem).
* :func:`ack_port_changes`, :func:`ack_run_change`: RW1C acknowledgements by read-modify-write
  (DCPORTSC.PED is written back as read: a bare 0 would disable the port).
"""

from __future__ import annotations

from collections.abc import Callable

from dbc_harness.drivers.dbc.bringup import DbcContextMemory
from dbc_harness.drivers.dbc.counters import DbcCounters
from dbc_harness.drivers.dbc.datapath import HostToTargetPipe, TargetToHostPipe
from dbc_harness.drivers.dbc.errors import DbcDeviceError, UndeliveredMessage
from dbc_harness.drivers.dbc.events import EventHandler
from dbc_harness.drivers.dbc.registers import DCR, DRC, HIT, HOT, DbcRegisters
from dbc_harness.drivers.dbc.state import DbcState, StateMachine
from dbc_harness.drivers.xhci.registers import DCCTRL, DCPORTSC, DCPORTSC_RW1C, DCST

_ACK_PORTSC_FIELDS = DCPORTSC_RW1C


def reinit_pipes(
    out_pipe: TargetToHostPipe,
    in_pipe: HostToTargetPipe,
    memory: DbcContextMemory,
    max_burst: int,
    reason: str,
    *,
    events_lost: bool = False,
) -> list[UndeliveredMessage]:
    """Flush both pipes, reset both rings, rewrite both endpoint contexts. Returns what was
    in flight target -> host (not fully delivered), in write order (``events_lost``: see
    :meth:`TargetToHostPipe.flush`)."""
    undelivered = out_pipe.flush(reason, events_lost=events_lost)
    in_pipe.flush()
    memory.fill_endpoints(out_pipe.ring, in_pipe.ring, max_burst)
    return undelivered


def ack_port_changes(regs: DbcRegisters, portsc: int) -> None:
    """Clear the DCPORTSC change bits that are set (write them back as 1), everything else as
    read (PED stays as it is)."""
    if any(DCPORTSC.get(portsc, name) for name in _ACK_PORTSC_FIELDS):
        regs.write32(regs.DCPORTSC, portsc)


def ack_run_change(regs: DbcRegisters, ctrl: int) -> None:
    """Clear DCCTRL.DRC (RW1C) keeping DCE and LSE; HIT/HOT written as 0 (never halt by
    accident)."""
    regs.write32(regs.DCCTRL, DCCTRL.replace(ctrl, DRC=1, HIT=0, HOT=0))


def port_changes(portsc: int) -> list[str]:
    """Names of the DCPORTSC change bits set (for logs)."""
    return [name for name in _ACK_PORTSC_FIELDS if DCPORTSC.get(portsc, name)]


class LinkFollower:
    """Follows DCCTRL/DCPORTSC after each drain (the driver calls :meth:`follow`)."""

    def __init__(
        self,
        regs: DbcRegisters,
        events: EventHandler,
        out_pipe: TargetToHostPipe,
        in_pipe: HostToTargetPipe,
        memory: DbcContextMemory,
        sm: StateMachine,
        counters: DbcCounters,
        *,
        doorbell: Callable[[int], None],
        undelivered: Callable[[list[UndeliveredMessage]], None],
        device_error: Callable[[DbcDeviceError], None],
    ) -> None:
        self.regs = regs
        self.events = events
        self.out = out_pipe
        self.inp = in_pipe
        self.memory = memory
        self.sm = sm
        self.counters = counters
        self._doorbell = doorbell
        self._undelivered = undelivered
        self._device_error = device_error
        #: DCCTRL Debug Max Burst, copied into the endpoint contexts on re-initialisation
        self.max_burst = 0

    def follow(self, ctrl: int) -> None:
        """React to ``ctrl`` (DCCTRL as read before the drain) and to what the drain saw."""
        sm, events = self.sm, self.events
        if sm.state is DbcState.CONFIGURED:
            if events.port_change or not ctrl & DCR or ctrl & DRC:
                ctrl = self._configured_change(ctrl)
            if sm.state is DbcState.CONFIGURED and (
                ctrl & (HIT | HOT) or self.out.halted or self.inp.halted
            ):
                self._follow_halts(ctrl)
        if sm.state is DbcState.ENABLED or sm.state is DbcState.CONNECTED:
            self._not_configured(ctrl)

    def _configured_change(self, ctrl: int) -> int:
        """CONFIGURED and something changed: disconnect, port reset, DCR drop, or only DRC."""
        regs = self.regs
        self.events.port_change = False
        portsc = regs.dcportsc()
        ccs = DCPORTSC.get(portsc, "CCS")
        changes = port_changes(portsc)
        if DCCTRL.get(ctrl, "DCR") and ccs and "PRC" not in changes and "CSC" not in changes:
            ack_port_changes(regs, portsc)
            if ctrl & DRC:
                # DCR dropped and came back between two polls: the controller reloaded the
                # endpoint contexts (and waits for a doorbell), so restart from clean rings.
                self._lost_host(ctrl, portsc, "DbC Run Change (reconfigured)")
                return regs.dcctrl()
            return ctrl  # a link status change only
        if "PRC" in changes or DCPORTSC.get(portsc, "PR"):
            reason = "port reset by the host"
        elif not ccs:
            reason = "unplugged"
        else:
            reason = "deconfigured by the host (DCR = 0)"
        self._lost_host(ctrl, portsc, reason)
        return regs.dcctrl()

    def _lost_host(self, ctrl: int, portsc: int, reason: str) -> None:
        """Consume what the controller wrote, flush and re-initialise both pipes, acknowledge,
        wait for the host again."""
        regs = self.regs
        # Events written since the drain that preceded this call (the port changed state in
        # between: completions of the old rings must not land on the new ones). The DbC is
        # not reset here, so an event it held on a full ring is written once DCERDP moves:
        # drain until none comes.
        for _ in range(8):
            if not self.events.drain():
                break
        self._undelivered(reinit_pipes(self.out, self.inp, self.memory, self.max_burst, reason))
        ack_port_changes(regs, portsc)
        if ctrl & DRC:
            ack_run_change(regs, ctrl)
        self.counters.recoveries["port_reset" if "reset" in reason else "disconnect"] += 1
        ccs = DCPORTSC.get(portsc, "CCS")
        self.sm.to(DbcState.CONNECTED if ccs else DbcState.ENABLED, reason)

    def _not_configured(self, ctrl: int) -> None:
        regs = self.regs
        self.events.port_change = False
        portsc = regs.dcportsc()
        ccs = DCPORTSC.get(portsc, "CCS")
        if DCCTRL.get(ctrl, "DCR"):
            self._configured(ctrl, portsc)
            return
        if ccs and self.sm.state is DbcState.ENABLED:
            self.sm.to(DbcState.CONNECTED, "DCPORTSC.CCS = 1")
        elif not ccs and self.sm.state is DbcState.CONNECTED:
            self.sm.to(DbcState.ENABLED, "DCPORTSC.CCS = 0")
        ack_port_changes(regs, portsc)

    def _configured(self, ctrl: int, portsc: int) -> None:
        """DCR rose: acknowledge DCPORTSC and DRC, then ring both doorbells (7.6.7.4: the
        endpoints stay idle until software rings them)."""
        regs, sm = self.regs, self.sm
        ack_port_changes(regs, portsc)
        if ctrl & DRC:
            ack_run_change(regs, ctrl)
        port = DCST.get(regs.dcst(), "debug_port_number")
        if sm.state is DbcState.ENABLED:
            sm.to(DbcState.CONNECTED, "DCPORTSC.CCS = 1")
        sm.to(DbcState.CONFIGURED, f"DCR = 1, debug port {port}")
        if port == 0:
            self._device_error(DbcDeviceError("DCST Debug Port Number is 0 after DCR = 1"))
        self.out.halted = self.inp.halted = False
        self.inp.prime()
        self.out.pump()
        self._doorbell(1)
        self._doorbell(0)

    def _follow_halts(self, ctrl: int) -> None:
        """HIT/HOT: hold a halted pipe; when the host cleared the halt, ring its doorbell."""
        for pipe, halted, target in ((self.out, ctrl & HOT, 0), (self.inp, ctrl & HIT, 1)):
            if halted:
                pipe.halted = True
            elif pipe.halted:
                pipe.halted = False
                self.counters.recoveries["halt_cleared"] += 1
                self._doorbell(target)
