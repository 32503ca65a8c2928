"""The kernel bench's host-side parts that need no guest: machine configuration and QEMU argv,
kernel package names, the build cache (lock, atomic rename), the PVH payload extraction, the
stage-2 and command scripts (run by the host's /bin/sh), and JUnit parsing."""

from __future__ import annotations

import gzip
import lzma
import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dbc_harness.fixtures.kernel_bench import (
    CacheLockTimeout,
    InvalidConfiguration,
    JunitError,
    KernelBuildError,
    MachineConfig,
    cache,
    guest,
    kernel,
    pvh,
)
from dbc_harness.fixtures.kernel_bench.junit import parse_junit
from dbc_harness.fixtures.kernel_bench.qemu import kernel_cmdline, qemu_argv
from hypothesis import given, settings
from hypothesis import strategies as st


def _argv(config: MachineConfig, tmp_path: Path) -> list[str]:
    return qemu_argv(
        config,
        vmlinuz=Path("/k/vmlinux"),
        initrd=Path("/k/initrd.img"),
        cmdline="console=ttyS0",
        share=tmp_path,
        workdir=tmp_path,
    )


def _devices(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-device"]


def test_default_machine_is_tcg_q35_with_qemu_xhci_behind_an_intremap_iommu(
    tmp_path: Path,
) -> None:
    argv = _argv(MachineConfig(), tmp_path)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert argv[argv.index("-machine") + 1] == "q35"
    devices = _devices(argv)
    assert devices == ["intel-iommu,intremap=on", "qemu-xhci,id=xhci,addr=0x04.0"]
    shares = [argv[i + 1] for i, word in enumerate(argv) if word == "-virtfs"]
    assert shares[0].startswith("local,path=/,mount_tag=hostroot,") and "readonly=on" in shares[0]
    assert shares[1].startswith(f"local,path={tmp_path},mount_tag=share,")
    assert "readonly" not in shares[1]
    assert "-no-reboot" in argv and argv[argv.index("-nic") + 1] == "none"


def test_no_iommu_machine_has_no_iommu_device_and_nec_controller(tmp_path: Path) -> None:
    argv = _argv(MachineConfig(controller="nec-usb-xhci", iommu=False), tmp_path)
    assert _devices(argv) == ["nec-usb-xhci,id=xhci,addr=0x04.0"]


def test_extra_devices_usb_on_the_xhci_storage_gets_an_image_and_group_peer_shares_the_slot(
    tmp_path: Path,
) -> None:
    config = MachineConfig(
        intremap=False, extra_devices=("usb-kbd", "usb-storage", "group-peer", "edu,addr=0x06")
    )
    argv = _argv(config, tmp_path)
    assert _devices(argv) == [
        "intel-iommu,intremap=off",
        "qemu-xhci,id=xhci,addr=0x04.0,multifunction=on",
        "usb-kbd,bus=xhci.0",
        "usb-storage,bus=xhci.0,drive=stick1",
        "edu,addr=0x04.1",
        "edu,addr=0x06",
    ]
    drive = argv[argv.index("-drive") + 1]
    image = tmp_path / "usb-storage-1.img"
    assert drive == f"if=none,id=stick1,format=raw,file={image}"
    assert image.stat().st_size == 8 << 20
    assert config.label == "qemu-xhci+iommu+nointremap+usb-kbd+usb-storage+group-peer+edu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"controller": "ehci"}, "unknown controller 'ehci'"),
        ({"memory_mb": 64}, "memory_mb=64"),
        ({"cpus": 0}, "cpus=0"),
        ({"extra_devices": ("usb-kbd;rm -rf /",)}, "not a QEMU -device spec"),
        ({"extra_devices": ("usb-kbd bus=x",)}, "not a QEMU -device spec"),
    ],
)
def test_impossible_machines_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfiguration, match=message):
        MachineConfig(**kwargs)


def test_kernel_cmdline_carries_stage1_parameters_and_refuses_unsafe_paths(tmp_path: Path) -> None:
    line = kernel_cmdline(
        MachineConfig(), "6.1.0-56-amd64", Path("/m/6.1.0-56-amd64"), tmp_path, tmp_path / "s.sh"
    )
    words = line.split()
    assert "intel_iommu=on" in words and "rdinit=/init" in words and "panic=-1" in words
    assert f"dbckb_share={tmp_path}" in words and "dbckb_kver=6.1.0-56-amd64" in words
    assert "intel_iommu=on" not in kernel_cmdline(
        MachineConfig(iommu=False), "v", Path("/m"), tmp_path, tmp_path / "s"
    )
    with pytest.raises(InvalidConfiguration, match="whitespace"):
        kernel_cmdline(MachineConfig(), "v", Path("/m"), Path("/tmp/a b"), Path("/s"))


def test_kernel_package_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert kernel.version_of("linux-image-6.1.0-56-amd64") == "6.1.0-56-amd64"
    with pytest.raises(KernelBuildError, match="not a versioned Debian kernel image package"):
        kernel.version_of("linux-image-amd64")
    monkeypatch.setenv(kernel.PACKAGE_ENV, "linux-image-6.1.0-9-amd64")
    assert kernel.resolve_package(tmp_path) == "linux-image-6.1.0-9-amd64"
    monkeypatch.delenv(kernel.PACKAGE_ENV)
    for version in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64"):
        (tmp_path / f"kernel-{version}").mkdir()
    assert kernel.cached_kernels(tmp_path)[-1] == "6.1.0-56-amd64"
    assert kernel.resolve_package(tmp_path) == "linux-image-6.1.0-56-amd64"


def test_apt_cache_depends_output_is_parsed() -> None:
    out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n  Recommends: x\n"
    match = kernel._DEPENDS_RE.search(out)
    assert match is not None and match.group(1) == "linux-image-6.1.0-56-amd64"


def test_a_failing_apt_command_names_the_package_and_its_output() -> None:
    with pytest.raises(KernelBuildError) as info:
        kernel._run(["apt-cache", "show", "no-such-package-dbc-harness"], "looking up X", 60)
    assert "no-such-package-dbc-harness" in str(info.value)
    assert "looking up X" in str(info.value)


def test_build_once_renames_a_complete_build_into_place_and_cleans_failures(
    tmp_path: Path,
) -> None:
    calls = []

    def good(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "artefact").write_text("done")

    target = cache.build_once(tmp_path, "thing", good)
    assert (target / "artefact").read_text() == "done"
    assert cache.build_once(tmp_path, "thing", good) == target
    assert len(calls) == 1

    def bad(tmp: Path) -> None:
        (tmp / "half").write_text("half")
        raise KernelBuildError("apt failed")

    with pytest.raises(KernelBuildError):
        cache.build_once(tmp_path, "broken", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]


def _hold_lock(root: str, seconds: float, ready: multiprocessing.synchronize.Event) -> None:
    with cache.locked(Path(root)):
        ready.set()
        time.sleep(seconds)


def test_the_build_lock_has_a_deadline(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), 1.0, ready))
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        with pytest.raises(CacheLockTimeout, match="still held"), cache.locked(tmp_path, 0.3):
            pass
        assert time.monotonic() - started < 2
    finally:
        holder.join(10)
    with cache.locked(tmp_path, 1.0):  # released by the holder's exit
        pass


def _build_counting(root: str) -> None:
    def build(tmp: Path) -> None:
        with (Path(root) / "builds.log").open("a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        (tmp / "artefact").write_text("x")

    cache.build_once(Path(root), "shared", build)


def test_concurrent_first_uses_build_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_build_counting, args=(str(tmp_path),)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    assert (tmp_path / "shared" / "artefact").read_text() == "x"


def test_cache_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "c"))
    assert cache.cache_root() == (tmp_path / "c").resolve()
    monkeypatch.delenv(cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == (tmp_path / "x" / "dbc-harness" / "kernel-bench").resolve()


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress])
def test_vmlinux_is_extracted_from_a_bzimage_payload(compress: Callable[[bytes], bytes]) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    setup = b"MZ" + b"\x00" * 500 + b"\x1f\x8b\x08junk-not-a-stream" + b"\x00" * 100
    bzimage = setup + compress(elf) + b"\x00" * 64
    assert pvh.extract_vmlinux(bzimage) == elf
    assert pvh.extract_vmlinux(setup + compress(b"not an elf")) is None


SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), max_size=30
)


@settings(max_examples=20, deadline=None)
@given(args=st.lists(SAFE_TEXT, max_size=4), value=SAFE_TEXT)
def test_command_scripts_pass_argv_and_environment_through_sh_verbatim(
    tmp_path_factory: pytest.TempPathFactory, args: list[str], value: str
) -> None:
    cwd = tmp_path_factory.mktemp("cwd")
    report = ["sh", "-c", 'printf "%s\\0" "$PWD" "$V" "$@"', "sh", *args]
    script = guest.command_script(report, cwd=cwd, env={"V": value})
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\0")[:-1] == [str(cwd), value, *args]


def test_stage2_script_is_valid_sh_and_serves_numbered_runs(tmp_path: Path) -> None:
    text = guest.stage2_script(share=tmp_path, env={"A": "it's"}, modules=("xhci_pci",))
    check = subprocess.run(["/bin/sh", "-n", "-c", text], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "modprobe -a xhci_pci" in text and f"{tmp_path}/run-$n" in text
    assert "export A='it'\"'\"'s'" in text


def test_junit_outcomes(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.guest.test_a" name="test_ok" time="0.5">
  <system-out>hello</system-out></testcase>
<testcase classname="tests.guest.test_a" name="test_param[1]" time="0.1">
  <failure message="assert 1 == 2">trace here</failure></testcase>
<testcase classname="tests.guest.test_a.TestK" name="test_param" time="0">
  <skipped type="pytest.skip" message="needs the group-peer machine">why</skipped></testcase>
<testcase classname="tests.guest.test_ab" name="test_ok" time="0">
  <error message="fixture failed">boom</error></testcase>
</testsuite></testsuites>"""
    )
    outcomes = parse_junit(xml)
    assert [o.outcome for o in outcomes] == ["passed", "failed", "skipped", "error"]
    assert outcomes[0].stdout == "hello" and outcomes[0].seconds == 0.5
    assert outcomes[1].message == "assert 1 == 2" and "trace here" in outcomes[1].report()
    assert [o.matches("tests.guest.test_a", "test_param") for o in outcomes] == [
        False,
        True,
        True,
        False,
    ]
    assert [o.matches("tests.guest.test_a", "test_ok") for o in outcomes] == [
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(JunitError, match="wrote no JUnit XML"):
        parse_junit(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("<testsuites")
    with pytest.raises(JunitError, match="unreadable"):
        parse_junit(tmp_path / "bad.xml")
