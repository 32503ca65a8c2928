"""Bench farm pieces that need no farm: the remote wrapper's stop-and-restore on a vanished
client, run options, resource validation, the console's ready line, and the plugin's promise
not to import labgrid without --lg-env."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("labgrid", reason="the [lab] extra (labgrid) is not installed")

from dbc_harness.fixtures.lab.driver import (
    plain_script,
    run_arguments,
    watched_script,
)
from dbc_harness.fixtures.lab.errors import (
    BadBenchResource,
    LabError,
    UnknownRunOption,
)

pytest_plugins = ("pytester",)


def _service(marks: Path) -> str:
    """A long-running command that notes SIGTERM in ``marks`` and exits like a killed one."""
    inner = f'trap "echo TERM >> {marks}; exit 143" TERM; while :; do sleep 0.05; done'
    return "sh -c " + shlex.quote(inner)


def test_the_wrapper_stops_the_command_and_restores_when_the_client_goes_away(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    script = watched_script(_service(marks), f"echo restored >> {marks}")
    proc = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(0.5)
    assert proc.poll() is None, "the command must keep running while the client is there"
    assert proc.stdin is not None
    proc.stdin.close()  # the client's end of the channel closes (client killed, link lost)
    code = proc.wait(timeout=10)
    assert code == 143
    assert marks.read_text().split() == ["TERM", "restored"]


def test_the_wrapper_passes_a_successful_command_through_without_restoring(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    command = "sh -c " + shlex.quote("sleep 0.2; echo '{\"ok\": true}'; echo progress >&2")
    script = watched_script(command, f"echo restored >> {marks}")
    proc = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    code = proc.wait(timeout=10)  # the client's stdin stays open: a live client
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    assert code == 0
    assert proc.stdout.read() == b'{"ok": true}\n'
    assert proc.stderr.read() == b"progress\n"
    assert not marks.exists()
    proc.stdin.close()


def test_the_wrapper_keeps_the_client_open_until_the_command_ends(tmp_path: Path) -> None:
    """With the client's stdin open (a live client), only the command's own end ends it."""
    script = watched_script("sleep 0.3; exit 5", "echo restore-ran")
    proc = subprocess.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    code = proc.wait(timeout=10)
    assert code == 5
    assert proc.stderr is not None and proc.stderr.read() == b"restore-ran\n"
    assert proc.stdin is not None
    proc.stdin.close()


def test_the_plain_wrapper_restores_after_a_failure_and_keeps_the_exit_code() -> None:
    done = subprocess.run(
        ["sh", "-c", plain_script("sh -c " + shlex.quote("cat; exit 3"), "echo restore-ran")],
        input=b"bytes",
        capture_output=True,
        timeout=10,
    )
    assert (done.returncode, done.stdout, done.stderr) == (3, b"bytes", b"restore-ran\n")


def test_run_options_become_dbc_harness_run_flags() -> None:
    args = run_arguments(
        {
            "echo_sizes": [1, 1024],
            "throughput_mib": 2,
            "quirks": ["endpoint_ids=0/1", "spurious_stall_on_clear_halt"],
            "lenient": True,
            "mmio32": False,
        }
    )
    assert args == [
        "--echo-sizes",
        "1,1024",
        "--throughput-mib",
        "2",
        "--quirk",
        "endpoint_ids=0/1",
        "--quirk",
        "spurious_stall_on_clear_halt",
        "--lenient",
    ]


def test_an_unknown_run_option_is_a_named_error() -> None:
    with pytest.raises(UnknownRunOption, match="no option 'echo'"):
        run_arguments({"echo": [1]})
    assert issubclass(UnknownRunOption, LabError)


def test_bench_resources_validate_their_parameters() -> None:
    from dbc_harness.fixtures.lab.resources import DbcDebugHost, DbcTarget, VirtualDbcBench

    target = DbcTarget(None, "bench", pci_address="0000:00:14.0", claim_mode="vfio")
    assert target.bench_spec() == "hw:0000:00:14.0"
    assert target.run_args() == ["--bench", "hw:0000:00:14.0", "--mode", "vfio"]
    with pytest.raises(BadBenchResource, match="not a PCI address"):
        DbcTarget(None, "bench", pci_address="00:14.0")
    with pytest.raises(BadBenchResource, match="claim_mode"):
        DbcTarget(None, "bench", pci_address="0000:00:14.0", claim_mode="magic")
    virtual = VirtualDbcBench(None, "v", harness="/opt/x/bin/dbc-harness", quirks=["mmio32"])
    assert virtual.run_args() == ["--bench", "virtual", "--quirk", "mmio32"]
    assert virtual.harness_argv() == ["/opt/x/bin/dbc-harness"]
    with pytest.raises(BadBenchResource, match="harness"):
        VirtualDbcBench(None, "v", harness="  ")
    assert DbcDebugHost(None, "h").usb_id == "1d6b:0010"
    with pytest.raises(BadBenchResource, match="16-bit"):
        DbcDebugHost(None, "h", vid=0x10000)


def test_console_announces_the_configured_dbc_before_echoing() -> None:
    """The line DbcHarnessDriver.open_session waits for, from the real CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.app.cli", "console", "virtual"],
        input=b"farm\n",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"farm\n"
    lines = done.stderr.decode().splitlines()
    ready = [i for i, s in enumerate(lines) if s.startswith("console ready on virtual")]
    closed = [i for i, s in enumerate(lines) if s.startswith("console closed")]
    assert ready and closed and ready[0] < closed[0]


def test_without_lg_env_the_plugin_stays_local_and_never_imports_labgrid(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_local(dbc_bench, dbc_driver):
            assert dbc_bench.name == "virtual"
            assert type(dbc_driver).__name__ == "DbcDriver"
            assert not any(m == "labgrid" or m.startswith("labgrid.") for m in sys.modules)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:labgrid", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_with_lg_env_but_no_labgrid_plugin_the_fixtures_stay_local(
    pytester: pytest.Pytester,
) -> None:
    """LG_ENV alone (labgrid's plugin not loaded) changes nothing."""
    pytester.makepyfile(
        """
        def test_local(dbc_bench):
            assert dbc_bench.name == "virtual"
        """
    )
    env_file = pytester.path / "env.yaml"
    env_file.write_text("targets: {}\n")
    os.environ["LG_ENV"] = str(env_file)
    try:
        result = pytester.runpytest_subprocess("-p", "no:labgrid", "-p", "no:cacheprovider")
    finally:
        del os.environ["LG_ENV"]
    result.assert_outcomes(passed=1)
