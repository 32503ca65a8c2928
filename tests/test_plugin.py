"""The pytest plugin, exercised through pytest's own ``pytester``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)


def test_help_shows_the_plugin_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "xHCI Debug Capability benches:" in text
    for option in ("--bench={virtual,qemu,hw}", "--xhci=BDF", "--trace-dir=DIR", "--dbc-quirk="):
        assert option in text


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    text = result.stdout.str()
    assert "@pytest.mark.hardware" in text
    assert "@pytest.mark.kernel_bench" in text
    assert "@pytest.mark.dbc_bench" in text


def test_hardware_tests_skip_with_reason_without_a_controller(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.hardware
        def test_plain():
            raise AssertionError("must not run without --xhci")

        @pytest.mark.hardware
        def test_with_fixture(dbc_driver):
            raise AssertionError("must not run without --xhci")
        """
    )
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no DbC-capable controller claimed: pass --xhci BDF*"])


def test_hw_bench_without_xhci_skips_and_bad_controller_skips_with_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        def test_needs_bench(dbc_bench):
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest("-rs", "--bench", "hw")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pass --xhci BDF*"])
    result = pytester.runpytest("-rs", "--bench", "hw", "--xhci", "0000:7f:1f.7")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*bench hw:0000:7f:1f.7 unavailable: no PCI device*"])


def test_unknown_bench_choice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--bench", "moon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'moon'" in result.stderr.str()


def test_qemu_bench_outside_the_guest_skips_with_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DBC_HARNESS_GUEST", raising=False)
    pytester.makepyfile(
        """
        def test_needs_bench(dbc_bench):
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest("-rs", "--bench", "qemu")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*runs inside the kernel-bench guest*"])


def _trace_files(trace_dir: Path) -> list[str]:
    return sorted(p.name for p in trace_dir.iterdir()) if trace_dir.exists() else []
