"""The QEMU kernel bench, from the host: each machine configuration boots once, runs every
guest-side test (tests/guest/) in one pytest session, and each guest test's outcome is asserted
here individually, so a failure names the guest test and shows its output.

The no-IOMMU machine also serves the bench's own API checks (exit status, streams, environment,
quoting, files through the share, command deadline) in the same boot. Skipped only on a host that
cannot run QEMU at all (no qemu-system-x86_64 / cpio / kmod / apt).
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbc_harness.drivers.native.build import build_reference
from dbc_harness.drivers.native.cc import CompileError
from dbc_harness.drivers.native.xhci_noop import build_xhci_noop
from dbc_harness.fixtures.kernel_bench import (
    BootTimeout,
    GuestCrashed,
    GuestResult,
    GuestTimeout,
    KernelBench,
    KernelBenchError,
    KernelBenchUnavailable,
    PytestResult,
    check_available,
)

pytestmark = [pytest.mark.kernel_bench, pytest.mark.timeout(2400)]
"""A test may wait for its machine's boot and whole guest run (and one queued before it)."""

ROOT = Path(__file__).resolve().parents[1]
GUEST_DIR = ROOT / "tests" / "guest"
SEPARATELY_BOOTED = {"test_usbip_kernel.py": "tests/test_kernel_bench_usbip.py"}
"""Guest modules that need their own machine (other modules loaded) and the host test that
boots it."""

CONFIGS: dict[str, dict[str, Any]] = {
    "vfio": {"controller": "qemu-xhci", "iommu": True, "extra_devices": ("usb-kbd",)},
    "sysfs": {"controller": "qemu-xhci", "iommu": False},
    "nec": {"controller": "nec-usb-xhci", "iommu": True, "extra_devices": ("usb-storage",)},
    "group-peer": {"controller": "qemu-xhci", "iommu": True, "extra_devices": ("group-peer",)},
    "nointremap": {"controller": "qemu-xhci", "iommu": True, "intremap": False},
}
"""The machines: qemu-xhci behind the IOMMU (VFIO; a keyboard attached), without IOMMU (sysfs
mode; also the API checks), nec-usb-xhci behind the IOMMU with a USB stick, qemu-xhci sharing
its IOMMU group with another device (refusals), and an IOMMU without interrupt remapping."""

GUEST_MODULES: dict[str, tuple[str, ...]] = {"nointremap": ("test_smoke.py", "test_vfio.py")}
"""Machines that run only some guest modules (the others need a working VFIO container)."""

API_CONFIG = "sysfs"
PARALLEL_GUESTS = 2
GUEST_RUN_TIMEOUT = 900.0


def _guest_modules(config: str) -> list[Path]:
    chosen = GUEST_MODULES.get(config)
    return [
        path
        for path in sorted(GUEST_DIR.glob("test_*.py"))
        if path.name not in SEPARATELY_BOOTED and (chosen is None or path.name in chosen)
    ]


def _guest_tests(paths: list[Path]) -> list[tuple[str, str]]:
    """(dotted module, test function) for every test function in ``paths``."""
    found = []
    for path in paths:
        module = f"tests.guest.{path.stem}"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test"):
                    found.append((module, node.name))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                        found.append((module, item.name))
    return found


GUEST_TESTS = {config: _guest_tests(_guest_modules(config)) for config in CONFIGS}
GUEST_CASES = [(c, m, f) for c, tests in GUEST_TESTS.items() for m, f in tests]


@dataclass
class ConfigRun:
    """One machine's boot: the guest pytest run and, for :data:`API_CONFIG`, the API probes."""

    name: str
    pytest: PytestResult | None = None
    error: KernelBenchError | None = None
    probes: dict[str, GuestResult] = field(default_factory=dict)
    timeout_error: GuestTimeout | None = None
    timeout_seconds: float = 0.0
    qemu_exit_status: int | None = None
    run_after_timeout: KernelBenchError | None = None
    blob: bytes = b""

    def result(self) -> PytestResult:
        if self.error is not None:
            pytest.fail(f"the {self.name} guest did not run its tests: {self.error}")
        assert self.pytest is not None
        return self.pytest


def _probe_api(session: Any, run: ConfigRun) -> None:
    run.probes["exit"] = session.run("echo to-stdout; echo to-stderr >&2; exit 7", 60)
    run.probes["env"] = session.run(
        'printf "%s\\n" "$DBC_HARNESS_GUEST" "$PWD" "$DBC_HARNESS_SHARE" '
        '"$DBC_HARNESS_GUEST_IOMMU" "$DBC_HARNESS_GUEST_CONTROLLER" "$EXTRA"; uname -r',
        60,
        env={"EXTRA": "per-run value"},
    )
    run.probes["argv"] = session.run(["printf", "%s|", "a b", "$HOME", "it's", ""], 60)
    run.probes["file"] = session.run(
        'head -c 1048576 /dev/urandom > "$DBC_HARNESS_SHARE/blob" && '
        'sha256sum "$DBC_HARNESS_SHARE/blob"',
        60,
    )
    blob = run.probes["file"].run_dir / "blob"
    run.blob = blob.read_bytes() if blob.exists() else b""  # the share goes with the bench
    started = time.monotonic()
    try:
        session.run("sleep 600", 3)
    except GuestTimeout as exc:
        run.timeout_error = exc
    run.timeout_seconds = time.monotonic() - started
    run.qemu_exit_status = session.qemu_returncode
    try:
        session.run("true", 10)
    except KernelBenchError as exc:
        run.run_after_timeout = exc


def _prebuild_native_objects() -> None:
    """Compile the C objects the guest tests run (the reference driver, xhci_noop.c) here, on
    the host: the guest reads the host's files, so it finds them in the same cache, where gcc
    under TCG would take minutes. A compile error is left for the guest tests to report."""
    try:
        build_reference()
        build_xhci_noop()
    except CompileError:
        pass


class GuestRuns:
    """Boots each configuration the selected tests need once, :data:`PARALLEL_GUESTS` at a time
    (a TCG guest mostly keeps one host core busy), keeping results and errors."""

    def __init__(self, needed: list[str]) -> None:
        _prebuild_native_objects()
        self._pool = ThreadPoolExecutor(PARALLEL_GUESTS, thread_name_prefix="kernel-bench")
        self._futures = {name: self._pool.submit(self._boot, name) for name in needed}

    def get(self, name: str) -> ConfigRun:
        if name not in self._futures:
            self._futures[name] = self._pool.submit(self._boot, name)
        return self._futures[name].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _boot(name: str) -> ConfigRun:
        run = ConfigRun(name)
        paths = [str(path.relative_to(ROOT)) for path in _guest_modules(name)]
        try:
            with KernelBench(**CONFIGS[name]) as bench, bench.session() as session:
                run.pytest = session.run_pytest(paths, "-v", timeout=GUEST_RUN_TIMEOUT)
                if name == API_CONFIG:
                    _probe_api(session, run)
        except KernelBenchError as exc:
            run.error = exc
        return run


def _configs_needed(items: list[pytest.Item]) -> list[str]:
    needed = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ != __name__:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "config" in callspec.params:
            needed.add(callspec.params["config"])
        elif "guest_runs" in getattr(item, "fixturenames", ()):
            needed.add(API_CONFIG)
    return [name for name in CONFIGS if name in needed]


@pytest.fixture(scope="session")
def guest_runs(request: pytest.FixtureRequest) -> Iterator[GuestRuns]:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable on this host: {exc}")
    runs = GuestRuns(_configs_needed(request.session.items))
    yield runs
    runs.close()
    assert _qemu_processes("dbc-kernel-bench-") == [], "a QEMU guest outlived the test session"


@pytest.mark.parametrize(
    ("config", "module", "function"),
    GUEST_CASES,
    ids=[f"{c}:{m.rsplit('.', 1)[1]}::{f}" for c, m, f in GUEST_CASES],
)
def test_guest(guest_runs: GuestRuns, config: str, module: str, function: str) -> None:
    result = guest_runs.get(config).result()
    outcomes = result.outcomes_of(module, function)
    assert outcomes, (
        f"{module}::{function} did not run in the {config} guest (exit {result.returncode})\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    )
    failed = [o for o in outcomes if o.outcome in ("failed", "error")]
    assert not failed, "\n\n".join(o.report() for o in failed)
    if all(o.outcome == "skipped" for o in outcomes):
        pytest.skip(f"skipped in the {config} guest: {outcomes[0].message}")


@pytest.mark.parametrize("config", list(CONFIGS))
def test_guest_run_is_complete(guest_runs: GuestRuns, config: str) -> None:
    # pytest in the guest exited normally (0 all passed, 1 some failed: named above) and every
    # test it ran is one this file asserts on (none generated out of sight).
    result = guest_runs.get(config).result()
    assert result.returncode in (0, 1), f"exit {result.returncode}\n{result.stdout[-4000:]}"
    known = set(GUEST_TESTS[config])
    unasserted = [
        o.nodeid
        for o in result.outcomes
        if not any(o.matches(module, function) for module, function in known)
    ]
    assert not unasserted, f"guest tests not asserted on the host: {unasserted}"
    assert "dbc-kernel-bench: stage 2" in result.console
    assert 0 < result.boot_seconds < GUEST_RUN_TIMEOUT


def test_run_returns_exit_status_and_separate_streams(guest_runs: GuestRuns) -> None:
    probe = guest_runs.get(API_CONFIG)
    probe.result()
    result = probe.probes["exit"]
    assert (result.returncode, result.stdout, result.stderr) == (7, "to-stdout\n", "to-stderr\n")


def test_guest_environment_working_directory_and_kernel(guest_runs: GuestRuns) -> None:
    probe = guest_runs.get(API_CONFIG)
    probe.result()
    result = probe.probes["env"]
    lines = result.stdout.splitlines()
    assert lines[:6] == ["1", str(ROOT), str(result.run_dir), "0", "qemu-xhci", "per-run value"]
    assert lines[6].endswith("-amd64") and lines[6] != os.uname().release


def test_argv_commands_reach_the_guest_verbatim(guest_runs: GuestRuns) -> None:
    probe = guest_runs.get(API_CONFIG)
    probe.result()
    result = probe.probes["argv"]
    assert result.returncode == 0
    assert result.stdout == "a b|$HOME|it's||"


def test_files_written_in_the_guest_arrive_on_the_host(guest_runs: GuestRuns) -> None:
    probe = guest_runs.get(API_CONFIG)
    probe.result()
    result = probe.probes["file"]
    assert result.returncode == 0, result.stderr
    guest_digest = result.stdout.split()[0]
    assert len(probe.blob) == 1 << 20
    assert hashlib.sha256(probe.blob).hexdigest() == guest_digest


def test_command_deadline_stops_qemu_and_ends_the_session(guest_runs: GuestRuns) -> None:
    probe = guest_runs.get(API_CONFIG)
    probe.result()
    assert isinstance(probe.timeout_error, GuestTimeout)
    assert "did not finish within 3 s" in str(probe.timeout_error)
    assert "dbc-kernel-bench: stage 2" in probe.timeout_error.console
    assert probe.timeout_seconds < 3 + 15  # deadline plus QEMU's terminate grace
    assert probe.qemu_exit_status is not None  # QEMU is gone, not left spinning
    assert isinstance(probe.run_after_timeout, GuestCrashed)


def _qemu_processes(marker: str) -> list[int]:
    """Our QEMU children whose command line mentions ``marker`` (a bench's share path)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and "qemu-system" in cmdline and marker in cmdline:
            found.append(int(proc.name))
    return found


def test_boot_deadline_raises_boot_timeout_and_stops_qemu() -> None:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable on this host: {exc}")
    with KernelBench(iommu=False, boot_timeout=0.5) as bench:
        started = time.monotonic()
        with pytest.raises(BootTimeout, match=r"not ready after 0\.5 s"):
            bench.session()
        assert time.monotonic() - started < 0.5 + 15
        assert _qemu_processes(str(bench.share)) == []


def test_qemu_refusing_its_configuration_is_a_guest_crash_with_its_message() -> None:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable on this host: {exc}")
    with KernelBench(iommu=False, extra_devices=("usb-kbd,no_such_property=1",)) as bench:
        with pytest.raises(GuestCrashed, match="QEMU exited with status 1") as info:
            bench.run("true", 30)
        assert _qemu_processes(str(bench.share)) == []
    assert "no_such_property" in info.value.console


def test_shell_entry_point_runs_a_command_and_returns_its_exit_status() -> None:
    try:
        check_available()
    except KernelBenchUnavailable as exc:
        pytest.skip(f"kernel bench unavailable on this host: {exc}")
    argv = [sys.executable, "-m", "dbc_harness.fixtures.kernel_bench", "--no-iommu"]
    ok = subprocess.run(
        [*argv, "--", "sh", "-c", "echo hi from $DBC_HARNESS_GUEST; echo oops >&2; exit 3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert ok.returncode == 3, ok.stderr
    assert ok.stdout == "hi from 1\n"
    assert "oops\n" in ok.stderr and "boot " in ok.stderr and "exit 3" in ok.stderr
    bad = subprocess.run(
        [*argv, "--device", "usb-kbd,no_such_property=1", "--", "true"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert bad.returncode == 125
    assert "QEMU exited with status 1" in bad.stderr and "no_such_property" in bad.stderr
