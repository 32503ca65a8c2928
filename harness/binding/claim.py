"""Claim an xHCI for a user-space driver, and always give it back.

``with claim("0000:00:04.0") as c:`` yields a :class:`Claim` with ``c.mmio`` (BAR0, an
:class:`~drivers.mmio.Mmio`), ``c.dma`` (a :class:`~allocator.space.DmaSpace` the controller can
reach) and ``c.info`` (:class:`ClaimInfo`). Modes:

* ``vfio``: vfio-pci + type1v2 container/group (or iommufd + device cdev, ``vfio_api="iommufd"``,
  only on kernels that offer it); BAR0 through the VFIO region mmap, DMA through the IOMMU;
* ``sysfs``: no driver, ``resource0`` mmap, hugepages at physical addresses. No DMA isolation:
  only with ``unsafe=True``;
* ``auto``: vfio when the controller has an IOMMU group, else sysfs if ``unsafe``.

``dma_below_4g=True`` treats the controller as AC64 = 0 for DMA placement (IOVAs below 4 GiB,
``info.dma_limit`` = 4 GiB): regression-test a driver's AC64 = 0 path on a 64-bit controller.

Order of events. Checks first (nothing changed): device exists and is an xHCI, no live claim,
no mounted storage behind it, IOMMU group viable, lockdown (sysfs mode). Then the state file is
written, then driver_override, unbind, module load, drivers_probe, verify, open, map, PCI
command MEM + Bus Master. Release, on normal exit, exception, SIGINT, SIGTERM, SIGHUP or interpreter
exit: stop the controller (clear R/S; HCRST when the device has no function reset), Bus Master
off, unmap DMA, close fds, restore the original driver and driver_override exactly, delete the
state file, restore the previous signal handlers.
"""

from __future__ import annotations

import atexit
import mmap
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from dbc_harness.allocator.hugepage import HugepageDmaSpace
from dbc_harness.allocator.iova import IovaDmaSpace
from dbc_harness.allocator.space import DmaSpace
from dbc_harness.drivers.clock import REAL_CLOCK, Clock
from dbc_harness.drivers.mmio import Mmio
from dbc_harness.drivers.tracing import TraceSink
from dbc_harness.drivers.xhci.host import halt_controller, probe_capabilities
from dbc_harness.harness.binding import checks, state
from dbc_harness.harness.binding.dma_mapper import VfioDmaMapper
from dbc_harness.harness.binding.errors import (
    DeviceBusy,
    DeviceNotFound,
    GroupNotViable,
    HarnessError,
    LockdownActive,
    NoDbc,
    NoIommu,
    NotPermitted,
    StorageOnController,
    UnsafeModeRefused,
)
from dbc_harness.harness.binding.mmio import MmioRegion
from dbc_harness.harness.binding.pci import (
    PCI_CLASS_SERIAL_USB_XHCI,
    PCI_COMMAND,
    PCI_COMMAND_MASTER,
    PCI_COMMAND_MEMORY,
    normalize_bdf,
)
from dbc_harness.harness.binding.restore import restore_state
from dbc_harness.harness.binding.sysfs import DRIVER_MODULE, PciSysfs, modprobe
from dbc_harness.harness.binding.vfio import (
    VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX,
    Iommufd,
    RegionInfo,
    VfioContainer,
    VfioDevice,
    VfioGroup,
    cdev_path,
    iommufd_offered,
)

VFIO_DRIVER = "vfio-pci"
#: driver_override value that no driver matches: keeps the controller driverless in sysfs mode.
NO_DRIVER = "dbc-harness-none"


@dataclass
class ClaimInfo:
    """What the claim found and chose."""

    bdf: str
    #: "vfio" or "sysfs"
    mode: str
    #: "group" (type1v2 container), "iommufd", or "" in sysfs mode
    vfio_api: str
    original_driver: str | None
    iommu_group: int | None
    bar0_size: int
    #: HCCPARAMS1.AC64
    ac64: bool
    #: ``1 << 32`` when every DMA address must lie below 4 GiB (AC64 = 0, or ``dma_below_4g``):
    #: pass it as ``limit`` to ``dma.alloc``
    dma_limit: int | None
    #: byte offset of the Debug Capability in BAR0, None when the controller has none
    dbc_offset: int | None
    #: the device offers a function reset (VFIO_DEVICE_RESET / sysfs ``reset``)
    has_function_reset: bool
    #: decoded capability registers (dbc_harness.drivers.xhci.host.Capabilities)
    capabilities: Any = field(default=None, repr=False)

    @property
    def has_dbc(self) -> bool:
        return self.dbc_offset is not None

    @property
    def dbc_status(self) -> str:
        """``"no Debug Capability on this controller"`` or where the DbC is."""
        if self.dbc_offset is None:
            return "no Debug Capability on this controller"
        return f"Debug Capability at BAR0 + 0x{self.dbc_offset:x}"

    def require_dbc(self) -> int:
        """The DbC's BAR0 offset; NoDbc (an expected answer, not a crash) when there is none."""
        if self.dbc_offset is None:
            raise NoDbc(f"{self.bdf}: {self.dbc_status} (QEMU's xHCIs and many cards have none)")
        return self.dbc_offset


def _resolve_mode(sysfs: PciSysfs, bdf: str, mode: str, unsafe: bool) -> str:
    if mode not in ("auto", "vfio", "sysfs"):
        raise HarnessError(f"unknown claim mode {mode!r} (auto, vfio or sysfs)")
    group = sysfs.iommu_group(bdf)
    if mode == "auto":
        if group is not None:
            return "vfio"
        if unsafe:
            return "sysfs"
        raise NoIommu(
            f"{bdf} has no IOMMU group (boot with intel_iommu=on or amd_iommu=on for VFIO); "
            "sysfs mode works without one but gives the controller DMA access to all memory: "
            "pass unsafe=True (--unsafe) to accept that"
        )
    if mode == "vfio" and group is None:
        raise NoIommu(f"{bdf} has no IOMMU group: boot with intel_iommu=on / amd_iommu=on")
    if mode == "sysfs" and not unsafe:
        raise UnsafeModeRefused(
            "sysfs mode has no DMA isolation (the controller can write anywhere in RAM): "
            "pass unsafe=True (--unsafe) to use it"
        )
    return mode


class Claim:
    """A claimed controller. Use as a context manager (or call :meth:`release`)."""

    mmio: Mmio
    dma: DmaSpace
    info: ClaimInfo

    def __init__(
        self,
        bdf: str,
        mode: str = "auto",
        unsafe: bool = False,
        force: bool = False,
        *,
        vfio_api: str = "auto",
        sysfs: PciSysfs | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        proc_root: str | os.PathLike[str] = "/proc",
        clock: Clock = REAL_CLOCK,
        handle_signals: bool = True,
        dev_vfio: str | os.PathLike[str] = "/dev/vfio",
        dma_below_4g: bool = False,
        trace: TraceSink | None = None,
    ) -> None:
        self.bdf = normalize_bdf(bdf)
        self.sysfs = sysfs or PciSysfs(clock=clock)
        self.clock = clock
        self.state_dir = state_dir
        self._dev_vfio = Path(dev_vfio)
        self._released = False
        self._releasing = False
        self._closers: list[tuple[str, Any]] = []
        self._old_handlers: dict[int, Any] = {}
        self._mapper: VfioDmaMapper | None = None
        self._device: VfioDevice | None = None
        self._config: RegionInfo | None = None
        self._region: MmioRegion | None = None
        self._dma: DmaSpace | None = None
        self._state: state.ClaimState | None = None
        self._dma_below_4g = dma_below_4g
        #: receives an "mmio" event per BAR0 access (op, offset, value, width) when set
        self._trace = trace

        chosen = self._check(mode, unsafe, force, proc_root)
        self._state = state.ClaimState(
            bdf=self.bdf,
            mode=chosen,
            original_driver=self.sysfs.driver(self.bdf),
            original_driver_override=self.sysfs.driver_override(self.bdf),
            iommu_group=self.sysfs.iommu_group(self.bdf),
        )
        try:
            state.write(self._state, state_dir, exclusive=True)
        except FileExistsError as e:
            raise DeviceBusy(f"{self.bdf} was claimed by another process just now") from e
        # from here on every failure must give the machine back
        try:
            if handle_signals:
                self._install_signal_handlers()
            atexit.register(self.release)
            if chosen == "vfio":
                self._claim_vfio(vfio_api)
            else:
                self._claim_sysfs()
        except BaseException as e:
            try:
                self.release()
            except Exception as release_error:  # keep the cause of the failed claim on top
                e.add_note(f"while giving {self.bdf} back: {release_error}")
            raise

    # -- checks (nothing changes) --------------------------------------------------------------
    def _check(self, mode: str, unsafe: bool, force: bool, proc_root: Any) -> str:
        sysfs, bdf = self.sysfs, self.bdf
        sysfs.device_dir(bdf)
        if sysfs.class_code(bdf) != PCI_CLASS_SERIAL_USB_XHCI:
            raise DeviceNotFound(
                f"{bdf} is class 0x{sysfs.class_code(bdf):06x}, not an xHCI (0x0c0330)"
            )
        existing = state.path_for(bdf, self.state_dir)
        if existing.exists():
            old = state.read(existing)
            if state.pid_alive(old.pid):
                raise DeviceBusy(f"{bdf} is claimed by process {old.pid} (state file {existing})")
            raise DeviceBusy(
                f"{bdf} has a stale claim of dead process {old.pid} ({existing}): "
                "run `dbc-harness restore` (or python -m dbc_harness.harness.binding.restore) first"
            )
        chosen = _resolve_mode(sysfs, bdf, mode, unsafe)
        problems: list[str] = []
        used = checks.mounted_storage(sysfs, bdf, proc_root)
        if used and not force:
            what = ", ".join(f"/dev/{m.name} on {m.where}" for m in used)
            root = any(m.is_root for m in used)
            raise StorageOnController(
                f"{bdf} carries {'the root filesystem' if root else 'mounted storage'}: {what}; "
                "unmount it or pass force=True (--force)",
                [f"/dev/{m.name} on {m.where}" for m in used],
            )
        if chosen == "vfio":
            problems = checks.group_blockers(sysfs, bdf)
            if problems and not force:
                raise GroupNotViable(
                    f"IOMMU group {sysfs.iommu_group(bdf)} of {bdf} also holds "
                    f"{', '.join(problems)}; VFIO needs all of them on vfio-pci. "
                    "Move them yourself or pass force=True (--force) to try anyway",
                    problems,
                )
        else:
            mode_now = checks.lockdown_mode(sysfs.root)
            if mode_now not in (None, "none"):
                raise LockdownActive(
                    f"kernel lockdown is '{mode_now}': sysfs resource0 mmap and PCI config "
                    "writes fail with EPERM. Use vfio mode (IOMMU on) or disable Secure Boot"
                )
        return chosen

    # -- vfio ----------------------------------------------------------------------------------
    def _bind_to(self, driver: str) -> None:
        sysfs, bdf = self.sysfs, self.bdf
        if not sysfs.driver_registered(driver):
            modprobe(DRIVER_MODULE.get(driver, driver))
        sysfs.set_driver_override(bdf, driver)
        if sysfs.driver(bdf) != driver:
            sysfs.unbind(bdf)
            sysfs.drivers_probe(bdf)
            sysfs.wait_for_driver(bdf, driver)

    def _claim_vfio(self, vfio_api: str) -> None:
        sysfs, bdf = self.sysfs, self.bdf
        if vfio_api not in ("auto", "group", "iommufd"):
            raise HarnessError(f"unknown vfio_api {vfio_api!r} (auto, group or iommufd)")
        if not sysfs.module_loaded("vfio_iommu_type1") and vfio_api != "iommufd":
            try:
                modprobe("vfio_iommu_type1")
            except HarnessError:
                pass
        self._bind_to(VFIO_DRIVER)
        group_no = sysfs.iommu_group(bdf)
        assert group_no is not None
        use_group = vfio_api == "group" or (
            vfio_api == "auto" and (self._dev_vfio / "vfio").exists()
        )
        backend: VfioContainer | Iommufd
        if use_group:
            container = VfioContainer(self._dev_vfio / "vfio")
            self._closers.append(("VFIO container", container))
            group = VfioGroup(group_no, self._dev_vfio)
            self._closers.append(("VFIO group", group))
            if not group.viable:
                raise GroupNotViable(
                    f"VFIO says IOMMU group {group_no} is not viable: "
                    f"{', '.join(checks.group_blockers(sysfs, bdf)) or 'a peer has a driver'}"
                )
            group.set_container(container)
            container.set_iommu()
            device = group.get_device(bdf)
            api, backend, iommu_info = "group", container, container.iommu_info()
        else:
            cdev = cdev_path(sysfs.device_dir(bdf), self._dev_vfio / "devices")
            if cdev is None or not iommufd_offered():
                raise NoIommu("this kernel offers no iommufd / VFIO device cdev")
            ifd = Iommufd()
            self._closers.append(("iommufd", ifd))
            device = VfioDevice.open_cdev(cdev)
            self._closers.append(("VFIO device", device))
            device.bind_iommufd(ifd.fd)
            device.attach_ioas(ifd.ioas_id)
            api, backend, iommu_info = "iommufd", ifd, None
        if api == "group":
            self._closers.append(("VFIO device", device))
        self._device = device
        dev_info = device.info()
        bar0 = device.region_info(VFIO_PCI_BAR0_REGION_INDEX)
        self._config = device.region_info(VFIO_PCI_CONFIG_REGION_INDEX)
        self._set_command(memory=True, master=True)
        self._region = MmioRegion(
            device.mmap_region(bar0), bar0.size, name=f"{bdf} BAR0", trace=self._trace
        )
        caps = self._probe()
        self._mapper = VfioDmaMapper(backend, iommu_info, caps.ac64 and not self._dma_below_4g)
        self._dma = _iova_space(self._mapper)
        self._finish("vfio", api, bar0.size, caps, dev_info.has_reset)

    # -- sysfs ---------------------------------------------------------------------------------
    def _claim_sysfs(self) -> None:
        sysfs, bdf = self.sysfs, self.bdf
        sysfs.set_driver_override(bdf, NO_DRIVER)
        sysfs.unbind(bdf)
        sysfs.set_enable(bdf, True)
        try:
            self._set_command(memory=True, master=True)
        except NotPermitted as e:
            raise _permission_problem(f"PCI config write refused ({e})") from e
        path = sysfs.device_dir(bdf) / "resource0"
        try:
            fd = os.open(path, os.O_RDWR | os.O_SYNC | os.O_CLOEXEC)
        except PermissionError as e:
            raise _permission_problem(f"cannot open {path}: {e.strerror}") from e
        try:
            size = os.fstat(fd).st_size
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except PermissionError as e:
            raise _permission_problem(f"mmap of {path} refused: {e.strerror}") from e
        finally:
            os.close(fd)
        self._region = MmioRegion(mapping, size, name=f"{bdf} BAR0", trace=self._trace)
        caps = self._probe()
        self._dma = _hugepage_space(caps.ac64)
        self._finish("sysfs", "", size, caps, sysfs.has_function_reset(bdf))

    # -- shared --------------------------------------------------------------------------------
    def _probe(self) -> Any:
        assert self._region is not None
        return probe_capabilities(self._region)

    def _finish(self, mode: str, api: str, size: int, caps: Any, has_reset: bool) -> None:
        assert self._region is not None and self._dma is not None and self._state is not None
        self.mmio = self._region
        self.dma = self._dma
        self.info = ClaimInfo(
            bdf=self.bdf,
            mode=mode,
            vfio_api=api,
            original_driver=self._state.original_driver,
            iommu_group=self._state.iommu_group,
            bar0_size=size,
            ac64=caps.ac64,
            dma_limit=None if caps.ac64 and not self._dma_below_4g else 1 << 32,
            dbc_offset=caps.dbc_offset,
            has_function_reset=has_reset,
            capabilities=caps,
        )

    def pci_command(self) -> int:
        """The PCI Command register, read through the VFIO config region or sysfs ``config``."""
        if self._device is not None and self._config is not None:
            return self._device.region_read(self._config, PCI_COMMAND, 2)
        return self.sysfs.config_read(self.bdf, PCI_COMMAND, 2)

    def _set_command(self, *, memory: bool, master: bool) -> None:
        cmd = self.pci_command()
        cmd = (cmd | PCI_COMMAND_MEMORY) if memory else (cmd & ~PCI_COMMAND_MEMORY)
        cmd = (cmd | PCI_COMMAND_MASTER) if master else (cmd & ~PCI_COMMAND_MASTER)
        if self._device is not None and self._config is not None:
            self._device.region_write(self._config, PCI_COMMAND, 2, cmd)
        else:
            self.sysfs.config_write(self.bdf, PCI_COMMAND, 2, cmd)

    # -- signals -------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        # SIGHUP (the ssh session to the bench dropped) too, unless it is ignored (nohup)
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            self._old_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._releasing:
            return  # finish giving the controller back first
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _restore_signal_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()

    # -- release -------------------------------------------------------------------------------
    def stop_controller(self) -> None:
        """Clear USBCMD.R/S and wait for HCHalted; then HCRST unless the device has a function
        reset (VFIO resets it on close then)."""
        if self._region is None or self._region.closed:
            return

        reset = not (self._device is not None and self._device.info().has_reset)
        halt_controller(self._region, self.clock, reset=reset)

    def release(self) -> None:
        """Give everything back, in the documented order. Idempotent; raises the first error
        only after every step was attempted (RestoreFailed when the driver did not come back)."""
        if self._released:
            return
        self._releasing = True
        errors: list[BaseException] = []

        def step(fn: Any, *args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as e:  # keep going: later steps matter more
                errors.append(e)

        step(self.stop_controller)
        if self._region is not None or self._device is not None:
            step(self._set_command, memory=True, master=False)
        if self._dma is not None:
            step(self._dma.close)
        if self._mapper is not None:
            step(self._mapper.unmap_all)
        if self._region is not None:
            step(self._region.close)
        for _name, obj in reversed(self._closers):
            step(obj.close)
        self._closers.clear()
        if self._state is not None:
            if self._state.mode == "sysfs":
                step(self._disable_if_enabled)

            step(restore_state, self._state, self.sysfs, self.state_dir)
        self._restore_signal_handlers()
        atexit.unregister(self.release)
        self._released = True
        self._releasing = False
        if errors:
            raise errors[0]

    def _disable_if_enabled(self) -> None:
        if self.sysfs.driver(self.bdf) is None and self.sysfs.enable_count(self.bdf) > 0:
            self.sysfs.set_enable(self.bdf, False)

    @property
    def released(self) -> bool:
        return self._released

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.release()
            return
        try:
            self.release()
        except Exception as e:  # do not hide the original exception
            exc.add_note(f"while releasing {self.bdf}: {e}")


def _permission_problem(what: str) -> NotPermitted:
    """EPERM in sysfs mode: as root that is kernel lockdown (which /sys/kernel/security/lockdown
    only shows when securityfs is mounted); otherwise missing privileges."""
    if os.geteuid() != 0:
        return NotPermitted(f"{what}: sysfs mode needs root (CAP_SYS_ADMIN and CAP_SYS_RAWIO)")
    return LockdownActive(
        f"{what}: as root this means kernel lockdown (Secure Boot; see "
        "/sys/kernel/security/lockdown) forbids resource0 mmap and config writes. "
        "Use vfio mode with the IOMMU on, or disable Secure Boot"
    )


def _iova_space(mapper: VfioDmaMapper) -> DmaSpace:
    return IovaDmaSpace(mapper, iova_base=mapper.iova_base)


#: 2 MiB hugepages kept free for a sysfs-mode claim (given back on release)
SYSFS_HUGEPAGES = 4


def _hugepage_space(ac64: bool) -> DmaSpace:
    """Hugepages at physical addresses; with AC64 = 0 the driver passes ``limit=1 << 32`` to
    every allocation and the allocator refuses pages above 4 GiB."""
    return HugepageDmaSpace(reserve=SYSFS_HUGEPAGES)


def claim(
    bdf: str,
    mode: str = "auto",
    unsafe: bool = False,
    force: bool = False,
    **kwargs: Any,
) -> Claim:
    """Claim ``bdf`` (see the module docstring); returns a :class:`Claim`, a context manager."""
    return Claim(bdf, mode, unsafe, force, **kwargs)
