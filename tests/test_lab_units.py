"""Bench farm pieces that need no farm: the remote wrapper's stop-and-restore on a vanished
client, run options, resource validation, the console's ready line, and the plugin's promise
not to import labgrid without --lg-env."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import pytest

pytest.importorskip("labgrid", reason="the [lab] extra (labgrid) is not installed")

import attr
from dbc_harness.fixtures.lab.driver import (
    DbcHarnessDriver,
    plain_script,
    run_arguments,
    watched_script,
)
from dbc_harness.fixtures.lab.errors import (
    BadBenchResource,
    BadTestSelection,
    LabError,
    NoTestsCollected,
    NoTestSuite,
    RemoteOutputInvalid,
    UnknownRunOption,
    UnknownTestSelection,
)
from dbc_harness.fixtures.lab.resources import DbcTarget, VirtualDbcBench
from dbc_harness.fixtures.lab.suite import (
    RemoteSuite,
    check_in_suite,
    check_selection,
    locate_command,
    parse_junit,
    parse_locate,
    pytest_arguments,
    pytest_argv,
)
from labgrid import Target
from labgrid.driver.common import Driver
from labgrid.protocol import CommandProtocol

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


# ---------------------------------------------------------------------- named test selections

MIXED_SUITE = """
    import pytest


    class TestGroup:
        class TestInner:
            def test_nested(self):
                pass

        @pytest.mark.parametrize("value", [1, "a::b"])
        def test_param(self, value):
            assert value == 1, "value was not one"


    def test_skipped():
        pytest.skip("no controller here")


    @pytest.fixture
    def breaks_on_teardown():
        yield
        raise RuntimeError("teardown broke")


    def test_fails_then_teardown_breaks(breaks_on_teardown):
        assert 2 + 2 == 5


    def test_setup_error(no_such_fixture):
        pass


    @pytest.mark.xfail(reason="known bug")
    def test_known_bug():
        assert False


    def test_the_bench_options_arrived(request):
        assert request.config.getoption("--bench") == "virtual"
        assert request.config.getoption("--dbc-quirk") == ["no_64bit_mmio"]
    """

MIXED_OUTCOMES = {
    "suite/test_mixed.py::TestGroup::TestInner::test_nested": "passed",
    "suite/test_mixed.py::TestGroup::test_param[1]": "passed",
    "suite/test_mixed.py::TestGroup::test_param[a::b]": "failed",
    "suite/test_mixed.py::test_skipped": "skipped",
    "suite/test_mixed.py::test_fails_then_teardown_breaks": "failed",
    "suite/test_mixed.py::test_setup_error": "error",
    "suite/test_mixed.py::test_known_bug": "xfailed",
    "suite/test_mixed.py::test_the_bench_options_arrived": "passed",
}


def _mixed_suite(root: Path) -> Path:
    suite = root / "suite"
    suite.mkdir()
    (suite / "test_mixed.py").write_text(textwrap.dedent(MIXED_SUITE))
    return suite


def test_run_tests_options_become_pytest_flags() -> None:
    args = pytest_arguments(
        {
            "keyword": "echo and not slow",
            "markers": "not hardware",
            "quirks": "no_64bit_mmio",
            "dbc_part": "amd-renoir",
            "maxfail": 1,
            "timeout": None,
        }
    )
    assert args == [
        "-k",
        "echo and not slow",
        "-m",
        "not hardware",
        "--dbc-quirk",
        "no_64bit_mmio",
        "--dbc-part",
        "amd-renoir",
        "--maxfail",
        "1",
    ]
    with pytest.raises(UnknownRunOption, match="run_tests has no option 'echo_sizes'"):
        pytest_arguments({"echo_sizes": [1]})


def test_a_bad_selection_is_a_named_error_before_anything_runs() -> None:
    assert check_selection("tests/test_virtual_smoke.py") == ["tests/test_virtual_smoke.py"]
    assert check_selection(("tests/a.py::t[x y]", "tests")) == ["tests/a.py::t[x y]", "tests"]
    for bad, why in [
        ([], "empty"),
        ("  ", "not a pytest node id"),
        ("--junitxml=/etc/x", "an option"),
        ("/etc/passwd", "relative to the checkout"),
        ("tests/../../x.py", "relative to the checkout"),
        ("tests/a.py\n-p evil", "one line"),
    ]:
        with pytest.raises(BadTestSelection, match=why):
            check_selection(bad)
    check_in_suite(["tests/test_x.py::test_y", "tests/./sub"], "tests")
    with pytest.raises(BadTestSelection, match="start with tests/"):
        check_in_suite(["drivers/dbc/driver.py"], "tests")
    assert issubclass(BadTestSelection, LabError)


def test_bench_resources_say_where_and_how_the_suite_runs() -> None:

    target = DbcTarget(None, "b", pci_address="0000:00:14.0", harness="sudo /opt/h/bin/dbc-harness")
    assert target.harness_script() == (["sudo"], "/opt/h/bin/dbc-harness")
    assert target.pytest_args() == ["--bench", "hw", "--xhci", "0000:00:14.0"]
    assert target.python_argv() is None and target.tests is None
    virtual = VirtualDbcBench(
        None, "v", quirks=["no_64bit_mmio"], python="/opt/py/bin/python3 -X dev"
    )
    assert virtual.pytest_args() == ["--bench", "virtual", "--dbc-quirk", "no_64bit_mmio"]
    assert virtual.python_argv() == ["/opt/py/bin/python3", "-X", "dev"]
    assert VirtualDbcBench(None, "v", harness="python3 -m x").harness_script() == (
        ["python3", "-m", "x"],
        None,
    )
    with pytest.raises(BadBenchResource, match="absolute path"):
        VirtualDbcBench(None, "v", tests="tests")
    with pytest.raises(BadBenchResource, match="python: give a command"):
        VirtualDbcBench(None, "v", python=" ")


def test_the_pytest_command_runs_in_the_checkout_with_a_junit_report() -> None:
    suite = RemoteSuite(python="/opt/h/.venv/bin/python3", tests="/opt/h/tests", tmp="/var/tmp")
    assert (suite.root, suite.name) == ("/opt/h", "tests")
    junit = suite.junit_path("42-abc")
    assert junit == "/var/tmp/dbc-lab-42-abc.xml"
    argv = pytest_argv(
        suite,
        ["tests/test_virtual_smoke.py"],
        prefix=["sudo"],
        python=[suite.python],
        env=["DBC_LAB_JOB=42-abc"],
        args=["--bench", "hw", "--xhci", "0000:00:14.0", "-k", "echo"],
        junit=junit,
    )
    assert argv[:5] == ["sudo", "env", "-C", "/opt/h", "DBC_LAB_JOB=42-abc"]
    start = argv.index("PYTHONUNBUFFERED=1") + 1
    assert argv[start : start + 3] == ["/opt/h/.venv/bin/python3", "-m", "pytest"]
    assert "--junitxml=/var/tmp/dbc-lab-42-abc.xml" in argv
    assert ["-o", "junit_family=xunit1"] == argv[argv.index("-o") : argv.index("-o") + 2]
    assert argv[-8:] == [
        "--bench",
        "hw",
        "--xhci",
        "0000:00:14.0",
        "-k",
        "echo",
        "--",
        "tests/test_virtual_smoke.py",
    ]


def test_junit_reports_of_a_real_pytest_become_outcomes_by_node_id(tmp_path: Path) -> None:
    _mixed_suite(tmp_path)
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-o",
            "junit_family=xunit1",
            f"--junitxml={report}",
            "--bench",
            "virtual",
            "--dbc-quirk",
            "no_64bit_mmio",
            "suite/test_mixed.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    tests = parse_junit(report.read_text())
    assert {t.nodeid: t.outcome for t in tests} == MIXED_OUTCOMES
    assert [t.nodeid for t in tests] == list(MIXED_OUTCOMES)  # run order
    by_id = {t.nodeid: t for t in tests}
    param = by_id["suite/test_mixed.py::TestGroup::test_param[a::b]"]
    assert param.message.startswith("AssertionError: value was not one")
    assert "test_mixed.py:" in param.details
    assert by_id["suite/test_mixed.py::test_skipped"].message == "no controller here"
    both = by_id["suite/test_mixed.py::test_fails_then_teardown_breaks"]
    # the teardown's error is kept with the call's failure
    assert (
        both.message
        == 'assert (2 + 2) == 5; failed on teardown with "RuntimeError: teardown broke"'
    )
    assert "RuntimeError: teardown broke" in both.details
    assert "no_such_fixture" in by_id["suite/test_mixed.py::test_setup_error"].message
    assert by_id["suite/test_mixed.py::test_known_bug"].message == "known bug"
    assert all(t.seconds >= 0 for t in tests)


def test_a_module_that_fails_to_collect_is_an_error_named_by_its_file() -> None:
    """pytest 9's xunit1 record of a collection error (its exit code is then 2)."""
    report = (
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        '<testsuite name="pytest" errors="1" failures="0" skipped="0" tests="1" time="0.3">'
        '<testcase classname="" name="tests.sub.test_broken" file="tests/sub/test_broken.py" '
        'time="0.000"><error message="collection failure">ImportError while importing test '
        "module\nE   ModuleNotFoundError: No module named 'nope'</error></testcase>"
        "</testsuite></testsuites>"
    )
    [outcome] = parse_junit(report)
    assert (outcome.nodeid, outcome.outcome) == ("tests/sub/test_broken.py", "error")
    assert outcome.message == "collection failure"
    assert "No module named 'nope'" in outcome.details


def test_a_report_that_is_not_pytests_junit_is_a_named_error() -> None:
    with pytest.raises(RemoteOutputInvalid, match="not XML"):
        parse_junit("PASSED 3 tests")
    with pytest.raises(RemoteOutputInvalid, match="root is <html>"):
        parse_junit("<html/>")
    xunit2 = '<testsuites><testsuite><testcase classname="tests.test_a" name="t"/></testsuite>'
    xunit2 += "</testsuites>"
    with pytest.raises(RemoteOutputInvalid, match="not xunit1"):
        parse_junit(xunit2)


def _locate(command: str) -> tuple[int, str, list[str]]:
    done = subprocess.run(
        ["sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr.splitlines()


def test_the_suite_is_found_next_to_the_checkout_of_the_installed_harness(tmp_path: Path) -> None:
    harness = str(Path(sys.executable).parent / "dbc-harness")
    checkout = Path(__file__).resolve().parent.parent
    code, out, err = _locate(locate_command(harness, None, None))
    suite = parse_locate(out, exit_code=code, errors=err)
    assert suite.tests == str(checkout / "tests") and suite.root == str(checkout)
    assert Path(suite.python).samefile(sys.executable)
    # the resource's tests and python win
    own = _mixed_suite(tmp_path)
    code, out, err = _locate(locate_command(None, [sys.executable], str(own)))
    assert parse_locate(out, exit_code=code, errors=err).tests == str(own)
    # and each way of having no suite says what to do
    code, out, err = _locate(locate_command(harness, None, str(tmp_path / "nowhere")))
    with pytest.raises(NoTestSuite, match=r"no test suite at .*nowhere.*give the bench resource"):
        parse_locate(out, exit_code=code, errors=err)
    code, out, err = _locate(locate_command("true", None, None))  # a binary, not a script
    with pytest.raises(NoTestSuite, match="not a Python script: give the bench resource a python"):
        parse_locate(out, exit_code=code, errors=err)
    code, out, err = _locate(locate_command("dbc-harness-nowhere", None, None))
    with pytest.raises(NoTestSuite, match="no dbc-harness-nowhere on the bench machine"):
        parse_locate(out, exit_code=code, errors=err)


@attr.s(eq=False)
class LocalCommand(Driver, CommandProtocol):
    """A CommandProtocol that runs commands on this machine (what ShellDriver does on a
    console): the driver's path for places without SSH."""

    bindings: ClassVar[dict[str, object]] = {}  # type: ignore[misc]  # as DbcHarnessDriver

    def run(self, cmd: str, timeout: float | None = None) -> tuple[list[str], list[str], int]:
        done = subprocess.run(
            ["sh", "-c", cmd], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return (
            done.stdout.decode().splitlines(),
            done.stderr.decode().splitlines(),
            done.returncode,
        )

    def run_check(self, cmd: str) -> list[str]:
        raise NotImplementedError

    def get_status(self) -> int:
        return 1

    def wait_for(self) -> None:
        raise NotImplementedError

    def poll_until_success(self) -> None:
        raise NotImplementedError


def _local_place(tmp_path: Path, tests: Path, quirks: tuple[str, ...] = ()) -> DbcHarnessDriver:
    """An in-process labgrid target whose CommandProtocol runs commands on this machine (no
    SSH: the driver's plain path, ``sh -c`` with the restore wrapper), with a virtual bench."""
    target = Target("unit")
    state = tmp_path / "state"
    state.mkdir()
    harness = str(Path(sys.executable).parent / "dbc-harness")
    VirtualDbcBench(
        target, "bench", harness=harness, state_dir=str(state), tests=str(tests), quirks=quirks
    )
    LocalCommand(target, "local")
    driver = DbcHarnessDriver(target, "harness")
    target.activate(driver)
    return driver


def test_run_tests_returns_each_outcome_and_restores_after_failures(tmp_path: Path) -> None:
    suite = _mixed_suite(tmp_path)
    driver = _local_place(tmp_path, suite, quirks=("no_64bit_mmio",))
    restores: list[list[str]] = []
    real_restore = driver.restore

    def counting_restore() -> list[str]:
        restores.append(real_restore())
        return restores[-1]

    driver.restore = counting_restore  # observe the client side's restore
    lines: list[str] = []
    result = driver.run_tests(["suite/test_mixed.py"], markers="not slow", on_progress=lines.append)
    assert {t.nodeid: t.outcome for t in result.tests} == MIXED_OUTCOMES
    assert result.exit_code == 1 and not result.ok
    assert result.failed == [
        "suite/test_mixed.py::TestGroup::test_param[a::b]",
        "suite/test_mixed.py::test_fails_then_teardown_breaks",
        "suite/test_mixed.py::test_setup_error",
    ]
    assert result.counts() == {"passed": 3, "failed": 2, "skipped": 1, "error": 1, "xfailed": 1}
    assert result["suite/test_mixed.py::test_skipped"].message == "no controller here"
    assert result.suite == str(suite)
    # progress: pytest's -v lines, then the wrapper's restore
    assert "suite/test_mixed.py::TestGroup::test_param[1] PASSED" in "\n".join(lines)
    assert lines == result.progress
    assert any(line.startswith("dbc-lab: exit 1, running dbc-harness restore") for line in lines)
    assert restores == [[]]  # ... and the client's own restore after the failure
    assert not list(Path("/tmp").glob(f"dbc-lab-{result.job}.xml"))  # report fetched, removed

    passed = driver.run_tests("suite/test_mixed.py::TestGroup::TestInner", keyword="nested")
    assert passed.ok and passed.passed == ["suite/test_mixed.py::TestGroup::TestInner::test_nested"]
    assert restores == [[]]  # nothing failed: nothing to restore


def test_run_tests_names_a_selection_that_selects_nothing(tmp_path: Path) -> None:
    driver = _local_place(tmp_path, _mixed_suite(tmp_path))
    with pytest.raises(UnknownTestSelection, match="file or directory not found: suite/test_no"):
        driver.run_tests(["suite/test_mixed.py", "suite/test_nope.py"])
    with pytest.raises(
        NoTestsCollected, match=r"\(-k nothing_matches\): pytest says '.*deselected"
    ):
        driver.run_tests("suite/test_mixed.py", keyword="nothing_matches")
    with pytest.raises(BadTestSelection, match="start with suite/"):
        driver.run_tests("tests/test_virtual_smoke.py")
    with pytest.raises(UnknownRunOption, match="bench='hw'"):
        driver.run_tests("suite/test_mixed.py", bench="hw")
    assert issubclass(NoTestsCollected, UnknownTestSelection)
