"""A bench farm on loopback, end to end: a real labgrid coordinator and exporter, an sshd with a
throw-away key (the "bench machine" is this machine), places reserved and acquired with
labgrid-client, and pytest sessions with --lg-env whose tests reach the bench only through
labgrid. Everything listens on and talks to 127.0.0.1 only, and stops by itself."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("labgrid", reason="the [lab] extra (labgrid) is not installed")

from dbc_harness.fixtures.lab.loopback import (
    LoopbackFarm,
    lab_jobs,
    loopback_env,
    missing_tools,
    parse_token,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

BENCHES = ("bench-run", "bench-wait", "bench-kill", "bench-tests")
NESTED_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def farm() -> Iterator[LoopbackFarm]:
    missing = missing_tools()
    if missing:
        pytest.skip("a loopback bench farm needs " + ", ".join(missing))
    with LoopbackFarm(BENCHES) as farm:
        yield farm


def _reserve_and_acquire(farm: LoopbackFarm, place: str, group: str, tag: str) -> str:
    farm.create_place(place, group, bench=tag)
    token = farm.reserve(f"bench={tag}")
    farm.client("-p", "+", "acquire", token=token)
    return token


def _give_back(farm: LoopbackFarm, place: str, token: str) -> None:
    """What a CI job's cleanup does: cancel the reservation, then release the place (in this
    order the coordinator hands the place to the next waiting reservation at once; the other
    order leaves it to the coordinator's 15 s scheduling round)."""
    farm.client("cancel-reservation", token)
    farm.client("-p", place, "release")


def _nested_argv(farm: LoopbackFarm, where: Path, place: str, source: str) -> list[str]:
    (where / "test_inner.py").write_text(textwrap.dedent(source))
    env_yaml = farm.env_yaml(place, where / "env.yaml")
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-o",
        "timeout=60",
        "--lg-env",
        str(env_yaml),
        str(where / "test_inner.py"),
    ]


def _run_nested(
    farm: LoopbackFarm, where: Path, place: str, source: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _nested_argv(farm, where, place, source),
        cwd=where,
        env={**farm.client_env(), "DBC_LAB_OUT": str(where / "out.json")},
        capture_output=True,
        text=True,
        timeout=NESTED_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


INNER_RUN_AND_ECHO = """
    import json
    import logging
    import os
    import time

    from labgrid.driver import SSHDriver


    def test_run_through_the_farm(dbc_bench, caplog):
        caplog.set_level(logging.INFO, logger="StepLogger")
        assert dbc_bench.via == "labgrid" and dbc_bench.name == "virtual"
        assert isinstance(dbc_bench.harness.command, SSHDriver)
        arrived = []
        result = dbc_bench.run(
            echo_sizes=[1, 1024, 65536],
            throughput_mib=4,
            on_progress=lambda line: arrived.append((time.monotonic(), line)),
        )
        assert result.ok and result.exit_code == 0
        summary = result.summary
        assert [e["size"] for e in summary["echo"] if e["ok"]] == [1, 1024, 65536]
        assert summary["final_state"] == "DISABLED" and summary["restored"] is True
        # streamed: the bring-up line came while the run was still going
        configured = next(t for t, s in arrived if "-> CONFIGURED" in s)
        given_back = next(t for t, s in arrived if "giving everything back" in s)
        assert given_back - configured > 0.02
        # ... through labgrid's step logger
        assert "state CONNECTED -> CONFIGURED" in caplog.text
        with open(os.environ["DBC_LAB_OUT"], "w") as f:
            json.dump({"summary": summary, "progress": result.progress, "job": result.job}, f)


    def test_echo_through_the_held_dbc(dbc_driver, strategy):
        assert strategy.status.name == "configured"
        assert dbc_driver.state == "CONFIGURED"
        dbc_driver.write(b"hello farm")  # target -> host; the virtual host echoes it
        assert dbc_driver.read_exact(10, timeout=10.0) == b"hello farm"


    def test_off_restores_and_finds_nothing_left(strategy):
        strategy.transition("off")
        assert strategy.harness.last_restore == []
    """


def test_a_pytest_session_with_lg_env_runs_bring_up_and_echo_on_the_farm(
    farm: LoopbackFarm, tmp_path: Path
) -> None:
    token = _reserve_and_acquire(farm, "farm-run", "bench-run", "virtual-run")
    try:
        accepted_before = farm.sshd_log.read_text().count("Accepted publickey")
        done = _run_nested(farm, tmp_path, "farm-run", INNER_RUN_AND_ECHO)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "3 passed" in done.stdout
        out = json.loads((tmp_path / "out.json").read_text())
        transitions = [(a, b) for _, a, b in out["summary"]["transitions"]]
        assert ("CONNECTED", "CONFIGURED") in transitions
        assert out["summary"]["throughput_MBps"]["target_to_host"] > 0
        assert any("bringing the DbC up" in line for line in out["progress"])
        # the tests reached the bench over SSH (the loopback sshd let the farm's key in)
        assert farm.sshd_log.read_text().count("Accepted publickey") > accepted_before
        assert lab_jobs() == []  # nothing of the jobs is left running on the bench machine
    finally:
        _give_back(farm, "farm-run", token)


INNER_TEST_SELECTION = """
    import json
    import logging
    import os


    def test_a_named_selection_runs_on_the_bench(dbc_bench, caplog):
        caplog.set_level(logging.INFO, logger="StepLogger")
        lines = []
        result = dbc_bench.run_tests("tests/test_virtual_smoke.py", on_progress=lines.append)
        assert result.ok and result.exit_code == 0
        with open(os.environ["DBC_LAB_OUT"], "w") as f:
            json.dump(
                {
                    "tests": [[t.nodeid, t.outcome, t.seconds] for t in result.tests],
                    "suite": result.suite,
                    "job": result.job,
                    "progress": lines,
                    "logged": caplog.text,
                },
                f,
            )
    """


def test_a_named_test_selection_runs_on_the_bench_through_the_farm(
    farm: LoopbackFarm, tmp_path: Path
) -> None:
    token = _reserve_and_acquire(farm, "farm-tests", "bench-tests", "virtual-tests")
    try:
        done = _run_nested(farm, tmp_path, "farm-tests", INNER_TEST_SELECTION)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
        out = json.loads((tmp_path / "out.json").read_text())
        # the bench machine's own checkout ran it (this one: the farm's bench is this machine)
        assert out["suite"] == str(Path(__file__).resolve().parent)
        [(nodeid, outcome, seconds)] = out["tests"]
        assert (nodeid, outcome) == (
            "tests/test_virtual_smoke.py::test_bring_up_and_echo",
            "passed",
        )
        assert 0 < seconds < NESTED_TIMEOUT  # the JUnit report's duration
        passed_line = "tests/test_virtual_smoke.py::test_bring_up_and_echo PASSED"
        assert any(line.startswith(passed_line) for line in out["progress"])
        assert passed_line in out["logged"]  # through labgrid's step logger
        assert not (Path("/tmp") / f"dbc-lab-{out['job']}.xml").exists()  # fetched and removed
        assert lab_jobs() == []
    finally:
        _give_back(farm, "farm-tests", token)


def test_a_second_reservation_waits_until_the_first_client_releases(farm: LoopbackFarm) -> None:
    first = _reserve_and_acquire(farm, "farm-wait", "bench-wait", "virtual-wait")
    waiting = subprocess.Popen(
        farm.client_argv("reserve", "--wait", "--shell", "bench=virtual-wait"),
        env=loopback_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    second = None
    try:
        time.sleep(2.5)  # reserve --wait polls once a second
        assert waiting.poll() is None, "the second client got a bench that is taken"
        assert "state: waiting" in farm.client("reservations")
        _give_back(farm, "farm-wait", first)
        out, err = waiting.communicate(timeout=20)
        assert waiting.returncode == 0, err
        second = parse_token(out)
        farm.client("-p", "+", "acquire", token=second)
        assert "farm-wait" in farm.client("who")
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(timeout=5)
        if second is not None:
            _give_back(farm, "farm-wait", second)


INNER_LONG_RUN = """
    def test_long_run(dbc_bench):
        dbc_bench.run(
            echo_sizes=[1],
            throughput_mib=4096,
            on_progress=lambda line: print("PROGRESS", line, flush=True),
        )
    """

INNER_AFTER_KILL = """
    def test_the_bench_is_restored_and_runs_again(strategy, dbc_bench):
        strategy.transition("off")
        assert strategy.harness.last_restore == []  # dbc-harness restore: nothing to do
        assert dbc_bench.restore() == []
        result = dbc_bench.run(echo_sizes=[1, 1024], throughput_mib=0)
        assert result.ok
    """


def _wait_for_line(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"no {needle!r} from the client: {seen[-2000:]!r}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"client output ended: {seen[-2000:]!r}")
            seen += chunk
    return seen


def _wait_until_no_lab_jobs(timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := lab_jobs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_killing_the_client_mid_run_leaves_the_bench_restored(
    farm: LoopbackFarm, tmp_path: Path
) -> None:
    token = _reserve_and_acquire(farm, "farm-kill", "bench-kill", "virtual-kill")
    first = tmp_path / "killed"
    first.mkdir()
    client = subprocess.Popen(
        [*_nested_argv(farm, first, "farm-kill", INNER_LONG_RUN), "-s"],
        cwd=first,
        env=farm.client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_line(client, b"throughput target_to_host", timeout=60)
        assert lab_jobs(), "the run should be going on the bench machine"
        os.killpg(client.pid, signal.SIGKILL)  # the CI job dies: client and its ssh with it
        client.wait(timeout=10)
        # 4 GiB each way would take far longer: the bench machine stopped the run (and ran
        # dbc-harness restore) as soon as the client's end of the SSH channel closed
        assert _wait_until_no_lab_jobs(timeout=12) == []
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait(timeout=10)
    # the dead job still holds the place: the CI cleanup step gives it back
    assert "farm-kill" in farm.client("who")
    _give_back(farm, "farm-kill", token)
    token = _reserve_and_acquire(farm, "farm-kill-2", "bench-kill", "virtual-kill-2")
    try:
        second = tmp_path / "after"
        second.mkdir()
        done = _run_nested(farm, second, "farm-kill-2", INNER_AFTER_KILL)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
    finally:
        _give_back(farm, "farm-kill-2", token)


def test_bench_lab_reports_reserve_to_run_and_the_farm_overhead(farm: LoopbackFarm) -> None:
    """``dbc-harness bench lab --json`` (quick): its own loopback farm, the same run both ways."""
    done = subprocess.run(
        [farm.harness, "bench", "lab", "--json", "--quick"],
        env=loopback_env(),
        capture_output=True,
        timeout=NESTED_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert 0 < report["reserve_s"] < report["reserve_to_run_s"]
    assert report["farm_run_s"] > 0 and report["local_run_s"] > 0
    ratio = report["farm_run_s"] / report["local_run_s"]
    assert report["run_overhead_ratio"] == pytest.approx(ratio, abs=0.01)
    assert 0 < report["farm_first_progress_s"] < report["farm_run_s"]
    assert lab_jobs() == []
