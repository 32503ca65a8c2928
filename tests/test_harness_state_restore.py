"""Host-side tests of the binding layer's state file, restore and safety checks, against a fake
sysfs tree whose writes behave like the PCI core (tests/harness_fakesys.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dbc_harness.harness.binding import checks, state
from dbc_harness.harness.binding.claim import Claim
from dbc_harness.harness.binding.errors import (
    BadAddress,
    DeviceBusy,
    DeviceNotFound,
    GroupNotViable,
    LockdownActive,
    NoIommu,
    RestoreFailed,
    StateFileError,
    StorageOnController,
    UnsafeModeRefused,
)
from dbc_harness.harness.binding.pci import normalize_bdf
from dbc_harness.harness.binding.restore import restore_all, restore_state
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness_fakesys import fake_sysfs, link_driver, make_device

BDF = "0000:00:04.0"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_normalize_bdf_accepts_kernel_spelling_and_rejects_paths() -> None:
    assert normalize_bdf("00:04.0") == BDF
    assert normalize_bdf("0000:0A:1f.7") == "0000:0a:1f.7"
    for bad in ("../../etc", "0000:00:04.8", "0000:00:20.0", "", "0000:00:04"):
        with pytest.raises(BadAddress):
            normalize_bdf(bad)


@settings(max_examples=50, deadline=None)
@given(
    driver=st.one_of(st.none(), st.sampled_from(["xhci_hcd", "vfio-pci"])),
    override=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    group=st.one_of(st.none(), st.integers(0, 4096)),
    mode=st.sampled_from(["vfio", "sysfs"]),
)
def test_state_file_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    driver: str | None,
    override: str | None,
    group: int | None,
    mode: str,
) -> None:
    d = tmp_path_factory.mktemp("state")
    st_in = state.ClaimState(BDF, mode, driver, override, group)
    path = state.write(st_in, d)
    assert path == d / f"{BDF}.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert state.read(path) == st_in
    assert state.list_states(d) == [path]
    with pytest.raises(FileExistsError):
        state.write(st_in, d, exclusive=True)
    state.remove(BDF, d)
    assert state.list_states(d) == []
    state.write(st_in, d, exclusive=True)
    assert state.read(path) == st_in
    assert sorted(p.name for p in d.iterdir()) == [path.name]  # no temp file left


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"version": 99}', json.dumps({"version": 1, "bdf": "../x", "mode": "vfio"})],
)
def test_corrupt_state_file_is_a_named_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / f"{BDF}.json"
    p.write_text(text)
    with pytest.raises(StateFileError, match=str(p)):
        state.read(p)


def test_pid_alive() -> None:
    assert state.pid_alive(os.getpid())
    assert not state.pid_alive(_dead_pid())


def test_restore_after_crash_rebinds_original_driver(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, driver="vfio-pci")
    sysfs.set_driver_override(BDF, "vfio-pci")
    sdir = tmp_path / "run"
    st_ = state.ClaimState(BDF, "vfio", "xhci_hcd", None, 4, pid=_dead_pid())
    state.write(st_, sdir)
    lines = restore_all(sdir, sysfs)
    assert lines == [f"{BDF}: vfio-pci -> xhci_hcd"]
    assert sysfs.driver(BDF) == "xhci_hcd"
    assert sysfs.driver_override(BDF) is None
    assert state.list_states(sdir) == []
    # override is restored before the driver is unbound and probed again
    names = [p.rsplit("/", 1)[-1] for p, _ in sysfs.log]
    assert names.index("driver_override") < names.index("unbind") < names.index("drivers_probe")


def test_restore_keeps_original_override_exactly(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, driver=None)
    sysfs.set_driver_override(BDF, "dbc-harness-none")
    st_ = state.ClaimState(BDF, "sysfs", None, "some_driver", None, pid=_dead_pid())
    state.write(st_, tmp_path / "run")
    restore_all(tmp_path / "run", sysfs)
    assert sysfs.driver(BDF) is None
    assert sysfs.driver_override(BDF) == "some_driver"


def test_restore_leaves_live_claims_alone(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, driver="vfio-pci")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state.write(state.ClaimState(BDF, "vfio", "xhci_hcd", None, pid=live.pid), tmp_path)
        lines = restore_all(tmp_path, sysfs)
        assert "still claimed by live process" in lines[0]
        assert sysfs.driver(BDF) == "vfio-pci"
        assert len(state.list_states(tmp_path)) == 1
    finally:
        live.kill()
        live.wait()


def test_restore_of_a_vanished_device_fails_and_keeps_the_state_file(tmp_path: Path) -> None:
    _root, sysfs = fake_sysfs(tmp_path)
    state.write(state.ClaimState(BDF, "vfio", "xhci_hcd", None, pid=_dead_pid()), tmp_path)
    with pytest.raises(RestoreFailed, match="rescan"):
        restore_all(tmp_path, sysfs)
    assert len(state.list_states(tmp_path)) == 1


def test_restore_falls_back_to_explicit_bind(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, driver="vfio-pci")
    sysfs.default_driver.clear()  # drivers_probe finds nothing: restore must bind explicitly
    st_ = state.ClaimState(BDF, "vfio", "xhci_hcd", None, pid=_dead_pid())
    sysfs.clock = _FastClock()
    restore_state(st_, sysfs, tmp_path)
    assert sysfs.driver(BDF) == "xhci_hcd"
    assert any(p.endswith("drivers/xhci_hcd/bind") for p, _ in sysfs.log)


class _FastClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_mounted_storage_behind_controller_is_found(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    real = make_device(root, BDF)
    disk = real / "usb2" / "2-1" / "2-1:1.0" / "host0" / "block" / "sda"
    (disk / "sda1").mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    (disk / "sda1" / "dev").write_text("8:1\n")
    other = root / "devices" / "virtual" / "block" / "vda"
    other.mkdir(parents=True)
    (other / "dev").write_text("254:0\n")
    cb = root / "class" / "block"
    cb.mkdir(parents=True)
    for name, target in (("sda", disk), ("sda1", disk / "sda1"), ("vda", other)):
        os.symlink(os.path.relpath(target, cb), cb / name)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n30 22 8:1 / /mnt/usb rw - vfat /dev/sda1 rw\n"
    )
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    assert checks.block_devices_behind(sysfs, BDF) == {"sda": "8:0", "sda1": "8:1"}
    found = checks.mounted_storage(sysfs, BDF, proc)
    assert found == [checks.MountedDevice("sda1", "/mnt/usb")]
    # and the claim refuses before changing anything
    with pytest.raises(StorageOnController, match="/dev/sda1 on /mnt/usb") as exc:
        Claim(BDF, "vfio", sysfs=sysfs, state_dir=tmp_path / "run", proc_root=proc)
    assert exc.value.reasons == ["/dev/sda1 on /mnt/usb"]
    assert sysfs.log == [] and state.list_states(tmp_path / "run") == []
    # the root filesystem is named as such
    (proc / "self" / "mountinfo").write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(StorageOnController, match="the root filesystem"):
        Claim(BDF, "vfio", sysfs=sysfs, state_dir=tmp_path / "run", proc_root=proc)


def test_group_with_other_endpoint_refuses_before_any_change(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, group=5)
    make_device(root, "0000:00:05.0", cls=0x020000, driver="virtio-pci", group=5)
    make_device(root, "0000:00:1e.0", cls=0x060400, driver=None, group=5)  # a bridge may stay
    assert checks.group_blockers(sysfs, BDF) == ["0000:00:05.0 (driver virtio-pci)"]
    with pytest.raises(GroupNotViable, match=r"0000:00:05.0 \(driver virtio-pci\)"):
        Claim(BDF, "vfio", sysfs=sysfs, state_dir=tmp_path / "run")
    assert sysfs.log == [] and state.list_states(tmp_path / "run") == []


def test_mode_choice_refusals(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF, group=None)
    run = tmp_path / "run"
    with pytest.raises(NoIommu, match="intel_iommu=on"):
        Claim(BDF, "auto", sysfs=sysfs, state_dir=run)
    with pytest.raises(NoIommu):
        Claim(BDF, "vfio", sysfs=sysfs, state_dir=run)
    with pytest.raises(UnsafeModeRefused, match="unsafe=True"):
        Claim(BDF, "sysfs", sysfs=sysfs, state_dir=run)
    sec = root / "kernel" / "security"
    sec.mkdir(parents=True)
    (sec / "lockdown").write_text("none [integrity] confidentiality\n")
    assert checks.lockdown_mode(root) == "integrity"
    with pytest.raises(LockdownActive, match="integrity"):
        Claim(BDF, "sysfs", unsafe=True, sysfs=sysfs, state_dir=run)
    assert sysfs.log == [] and state.list_states(run) == []


def test_claim_refuses_non_xhci_missing_device_and_live_claims(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, "0000:00:02.0", cls=0x020000)
    make_device(root, BDF)
    run = tmp_path / "run"
    with pytest.raises(DeviceNotFound, match="not an xHCI"):
        Claim("0000:00:02.0", sysfs=sysfs, state_dir=run)
    with pytest.raises(DeviceNotFound, match="no PCI device"):
        Claim("0000:00:09.0", sysfs=sysfs, state_dir=run)
    state.write(state.ClaimState(BDF, "vfio", "xhci_hcd", None, pid=os.getpid()), run)
    with pytest.raises(DeviceBusy, match=f"claimed by process {os.getpid()}"):
        Claim(BDF, sysfs=sysfs, state_dir=run)
    state.write(state.ClaimState(BDF, "vfio", "xhci_hcd", None, pid=_dead_pid()), run)
    with pytest.raises(DeviceBusy, match="dbc-harness restore"):
        Claim(BDF, sysfs=sysfs, state_dir=run)


def test_failed_claim_restores_the_driver_and_removes_the_state_file(tmp_path: Path) -> None:
    """Binding works in the fake kernel but there is no /dev/vfio: the claim fails with NoIommu
    after it changed things, and must have put everything back."""
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF)
    (root / "module" / "vfio_iommu_type1").mkdir(parents=True)
    run = tmp_path / "run"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(NoIommu, match="does not exist"):
        Claim(
            BDF, "vfio", sysfs=sysfs, state_dir=run, dev_vfio=tmp_path / "nodev", vfio_api="group"
        )
    assert sysfs.driver(BDF) == "xhci_hcd"
    assert sysfs.driver_override(BDF) is None
    assert state.list_states(run) == []
    assert ("bus/pci/devices/0000:00:04.0/driver_override", "vfio-pci") in sysfs.log
    # the claim's SIGINT/SIGTERM handlers are gone again
    assert {s: signal.getsignal(s) for s in before} == before


def test_restore_module_main_reports(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.binding.restore", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "nothing to restore"
    (tmp_path / f"{BDF}.json").write_text("{broken")
    res = subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.binding.restore", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 1
    assert "unreadable" in res.stderr


def test_link_driver_helper_sanity(tmp_path: Path) -> None:
    root, sysfs = fake_sysfs(tmp_path)
    make_device(root, BDF)
    assert sysfs.driver(BDF) == "xhci_hcd"
    link_driver(root, BDF, None)
    assert sysfs.driver(BDF) is None
    assert sysfs.iommu_group(BDF) == 4
    assert sysfs.group_devices(4) == [BDF]


def test_sysfs_claim_and_release_on_a_fake_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sysfs-mode claim end to end against the fake PCI core: state file first, override
    that no driver matches, unbind, enable, MEM + Bus Master, resource0 mapped and decoded; on
    release Bus Master off, device disabled, xhci_hcd and the original override back, state file
    gone. resource0 is a plain file (its registers never react), so halting the "controller"
    times out, on a fake clock; release still completes every other step and then says so."""
    import struct

    from dbc_harness.allocator.emulated import EmulatedDmaSpace
    from dbc_harness.drivers.xhci.host import HostControllerTimeout
    from dbc_harness.harness.binding import claim as claim_mod
    from dbc_harness.harness.binding.pci import PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY

    root, sysfs = fake_sysfs(tmp_path)
    real = make_device(root, BDF, group=None)
    sysfs.clock = _FastClock()
    bar = bytearray(0x4000)
    for off, value in {0x00: 0x0100_0040, 0x04: 0x0800_1040, 0x10: 0x0000_7000}.items():
        struct.pack_into("<I", bar, off, value)  # AC64 = 0, no extended capabilities
    struct.pack_into("<I", bar, 0x44, 1)  # USBSTS.HCH: halted already
    (real / "resource0").write_bytes(bytes(bar))
    (real / "reset").write_text("")
    spaces: list[EmulatedDmaSpace] = []

    def fake_space(ac64: bool) -> EmulatedDmaSpace:
        spaces.append(EmulatedDmaSpace(base=0x1000_0000, size=1 << 28))
        return spaces[-1]

    monkeypatch.setattr(claim_mod, "_hugepage_space", fake_space)
    run = tmp_path / "run"
    accesses: list[tuple[str, int]] = []

    def sink(kind: str, /, **f: Any) -> None:
        accesses.append((kind, f["offset"]))

    c = Claim(BDF, "sysfs", unsafe=True, sysfs=sysfs, state_dir=run, clock=sysfs.clock, trace=sink)
    assert (c.info.mode, c.info.ac64, c.info.dbc_offset) == ("sysfs", False, None)
    assert c.info.original_driver == "xhci_hcd" and c.info.has_function_reset
    assert sysfs.driver(BDF) is None
    assert sysfs.driver_override(BDF) == "dbc-harness-none"
    assert sysfs.config_read(BDF, PCI_COMMAND, 2) == PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
    assert c.mmio.read32(0) == 0x0100_0040
    assert accesses[-1] == ("mmio", 0) and ("mmio", 0x10) in accesses  # HCCPARAMS1 was probed
    saved = state.read(state.path_for(BDF, run))
    assert (saved.original_driver, saved.original_driver_override) == ("xhci_hcd", None)
    first = sysfs.log[0]
    assert first == ("bus/pci/devices/0000:00:04.0/driver_override", "dbc-harness-none")
    with pytest.raises(HostControllerTimeout, match="HCRST"):
        c.release()
    assert c.released and c.mmio.closed  # type: ignore[attr-defined]  # the Mmio is a region
    assert sysfs.config_read(BDF, PCI_COMMAND, 2) & PCI_COMMAND_MASTER == 0
    assert sysfs.driver(BDF) == "xhci_hcd"
    assert sysfs.driver_override(BDF) is None
    assert state.list_states(run) == []
    assert spaces[0].stats()["live_bytes"] == 0
    c.release()  # idempotent
