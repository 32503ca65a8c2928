"""Recovery actions: unplug/replug, host port reset, DCR dropping, DCE dropping by itself
(controller reset under us) and surprise removal.

The driver's poll loop decides *when* (it reads DCCTRL and DCPORTSC); these functions do *what*:

* :func:`reinit_pipes`: flush both pipes (messages in flight are reported undelivered, received
  data stays readable), re-initialise both rings and both endpoint contexts, so the controller
  starts from clean rings when the host configures us again (otherwise rings fill up after a few
  reconnects, a known field problem).
* :func:`ack_port_changes`, :func:`ack_run_change`: RW1C acknowledgements by read-modify-write
  (DCPORTSC.PED is written back as read: a bare 0 would disable the port).
"""

from __future__ import annotations

from drivers.dbc.bringup import DbcContextMemory
from drivers.dbc.datapath import HostToTargetPipe, TargetToHostPipe
from drivers.dbc.errors import UndeliveredMessage
from drivers.dbc.registers import DbcRegisters
from drivers.xhci.registers import DCCTRL, DCPORTSC, DCPORTSC_RW1C

_ACK_PORTSC_FIELDS = DCPORTSC_RW1C


def reinit_pipes(
    out_pipe: TargetToHostPipe,
    in_pipe: HostToTargetPipe,
    memory: DbcContextMemory,
    max_burst: int,
    reason: str,
) -> list[UndeliveredMessage]:
    """Flush both pipes, reset both rings, rewrite both endpoint contexts. Returns what was
    in flight target -> host (not fully delivered), in write order."""
    undelivered = out_pipe.flush(reason)
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
