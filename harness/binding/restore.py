"""Give controllers back to their original drivers from state files.

Used by :class:`dbc_harness.harness.binding.claim.Claim` on release and by ``dbc-harness restore`` /
``python -m dbc_harness.harness.binding.restore`` after the harness process died (kill -9,
OOM). A claim whose process is still alive is left alone unless ``include_live``.
"""

from __future__ import annotations

import argparse
import os
import sys

from dbc_harness.harness.binding import state
from dbc_harness.harness.binding.errors import (
    BindError,
    DeviceNotFound,
    HarnessError,
    RestoreFailed,
)
from dbc_harness.harness.binding.pci import PCI_COMMAND, PCI_COMMAND_MASTER
from dbc_harness.harness.binding.sysfs import DRIVER_MODULE, PciSysfs, modprobe


def _quiesce_orphan(st: state.ClaimState, sysfs: PciSysfs) -> None:
    """After a crash in sysfs mode nothing stopped the controller: it may still DMA into memory
    the kernel has recycled. Bus Master off first (config space), then rebind (xhci_hcd halts
    and resets the controller in its probe). vfio-pci already did this when our fds closed."""
    if st.mode != "sysfs" or sysfs.driver(st.bdf) is not None:
        return
    cmd = sysfs.config_read(st.bdf, PCI_COMMAND, 2)
    if cmd & PCI_COMMAND_MASTER:
        sysfs.config_write(st.bdf, PCI_COMMAND, 2, cmd & ~PCI_COMMAND_MASTER)
    if sysfs.enable_count(st.bdf) > 0:
        sysfs.set_enable(st.bdf, False)


def restore_state(
    st: state.ClaimState,
    sysfs: PciSysfs | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Put ``st.bdf`` back on ``st.original_driver`` with ``st.original_driver_override`` and
    delete the state file. Returns a one-line summary; RestoreFailed if the driver did not come
    back (the state file is kept, so a later ``restore`` can retry)."""
    sysfs = sysfs or PciSysfs()
    bdf = st.bdf
    try:
        sysfs.device_dir(bdf)
    except DeviceNotFound as e:
        raise RestoreFailed(
            f"{bdf} is gone from sysfs; `echo 1 > /sys/bus/pci/rescan` may bring it back"
        ) from e
    _quiesce_orphan(st, sysfs)
    sysfs.set_driver_override(bdf, st.original_driver_override)
    current = sysfs.driver(bdf)
    target = st.original_driver
    if current != target:
        sysfs.unbind(bdf)
        if target is not None:
            if not sysfs.driver_registered(target):
                modprobe(DRIVER_MODULE.get(target, target))
            sysfs.drivers_probe(bdf)
            try:
                sysfs.wait_for_driver(bdf, target, timeout=5.0)
            except BindError:
                try:
                    sysfs.bind(bdf, target)
                    sysfs.wait_for_driver(bdf, target)
                except HarnessError as e:
                    raise RestoreFailed(
                        f"{bdf}: could not bind {target} again ({e}); try "
                        f"`echo {bdf} > /sys/bus/pci/drivers/{target}/bind`, or "
                        f"`echo 1 > /sys/bus/pci/devices/{bdf}/remove; "
                        "echo 1 > /sys/bus/pci/rescan`"
                    ) from e
    state.remove(bdf, state_dir)
    return f"{bdf}: {current or 'no driver'} -> {target or 'no driver'}"


def restore_all(
    state_dir: str | os.PathLike[str] | None = None,
    sysfs: PciSysfs | None = None,
    include_live: bool = False,
    bdfs: list[str] | None = None,
) -> list[str]:
    """Restore every controller with a stale state file (or only ``bdfs``). Returns one line per
    controller; raises RestoreFailed after trying all of them if any failed."""
    sysfs = sysfs or PciSysfs()
    wanted = None if not bdfs else {state.path_for(b, state_dir).name for b in bdfs}
    done: list[str] = []
    failures: list[str] = []
    for path in state.list_states(state_dir):
        if wanted is not None and path.name not in wanted:
            continue
        try:
            st = state.read(path)
        except HarnessError as e:
            failures.append(str(e))
            continue
        if state.pid_alive(st.pid) and st.pid != os.getpid() and not include_live:
            done.append(f"{st.bdf}: still claimed by live process {st.pid}; left alone")
            continue
        try:
            done.append(restore_state(st, sysfs, state_dir))
        except HarnessError as e:
            failures.append(str(e))
    if failures:
        raise RestoreFailed("; ".join(failures))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbc_harness.harness.binding.restore",
        description="Give xHCI controllers back to their original drivers (after a crash).",
    )
    parser.add_argument("bdf", nargs="*", help="only these controllers (default: all)")
    parser.add_argument("--state-dir", default=None, help="state file directory")
    parser.add_argument("--include-live", action="store_true", help="also live claims")
    args = parser.parse_args(argv)
    try:
        lines = restore_all(args.state_dir, include_live=args.include_live, bdfs=args.bdf)
    except HarnessError as e:
        print(f"restore failed: {e}", file=sys.stderr)
        return 1
    for line in lines or ["nothing to restore"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
