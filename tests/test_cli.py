"""dbc-harness CLI: command list, error lines + hints + exit codes, list and info decoding."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbc_harness.allocator.errors import (
    DmaFault,
    HugepagesUnavailable,
    PrivilegeRequired,
    UseAfterFree,
)
from dbc_harness.drivers.dbc.errors import DbcBusy, DbcNotFound, DbcTimeout, DbcUndelivered
from dbc_harness.fixtures.bench import UnknownBench
from dbc_harness.fixtures.trace import TraceError
from dbc_harness.fixtures.virtual import DebugHostTimeout, Finding, SpecViolation
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.app.cli_errors import ExitCode, explain
from dbc_harness.harness.app.inspect import inspect_mmio
from dbc_harness.harness.binding.errors import DeviceBusy, GroupNotViable, NoIommu, NotPermitted


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_help_lists_every_command() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in (
        *("list", "info", "claim", "run", "console", "send", "recv", "trace", "restore"),
        *("bench", "usbip"),
    ):
        assert f"  {command} " in out


@pytest.mark.parametrize(
    ("args", "code", "message", "hint"),
    [
        (["run", "--bench", "moon"], ExitCode.USAGE, "unknown bench 'moon'", "hw:BDF"),
        (["run", "--bench", "hw"], ExitCode.USAGE, "needs a controller address", "hw:BDF"),
        (["run", "--bench", "hw:12"], ExitCode.USAGE, "not a PCI address", "0000:00:14.0"),
        (
            ["run", "--bench", "hw:0000:7f:1f.7"],
            ExitCode.NOT_FOUND,
            "no PCI device 0000:7f:1f.7",
            "dbc-harness list",
        ),
        (["info", "0000:7f:1f.7"], ExitCode.NOT_FOUND, "no PCI device", "dbc-harness list"),
        (["claim", "0000:7f:1f.7"], ExitCode.NOT_FOUND, "no PCI device", "dbc-harness list"),
        (["claim", "12"], ExitCode.USAGE, "not a PCI address", "0000:00:14.0"),
        (["trace", "--out", "x.txt"], ExitCode.USAGE, "unknown trace format", ".pcapng"),
    ],
)
def test_errors_are_one_line_plus_hint_without_traceback(
    args: list[str], code: ExitCode, message: str, hint: str, tmp_path: Path
) -> None:
    args = [str(tmp_path / a) if a == "x.txt" else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert len(hints) == 1 and hint in hints[0], result.stderr
    assert "Traceback" not in result.output


def test_debug_flag_shows_the_traceback() -> None:
    result = CliRunner().invoke(cli, ["--debug", "run", "--bench", "moon"])
    assert result.exit_code != 0
    assert result.exc_info is not None
    assert type(result.exception).__name__ == "UnknownBench"


def test_bad_option_values_are_usage_errors() -> None:
    code, _, err = invoke("run", "--echo-sizes", "1,zero")
    assert code == ExitCode.USAGE and "'zero' is not a size in bytes" in err
    code, _, err = invoke("run", "--echo-sizes", "0")
    assert code == ExitCode.USAGE and "'0' is less than the minimum of 1" in err


@pytest.mark.parametrize(
    ("exc", "code", "hint_part"),
    [
        (NotPermitted("open /dev/vfio/3: permission denied"), ExitCode.PERMISSION, "root"),
        (NoIommu("no IOMMU group"), ExitCode.NO_IOMMU, "intel_iommu=on"),
        (DeviceBusy("held by pid 42"), ExitCode.BUSY, "dbc-harness restore"),
        (GroupNotViable("group 7", ["0000:00:14.2 in group 7"]), ExitCode.BUSY, "--force"),
        (DbcNotFound("no DbC"), ExitCode.NO_DBC, "no Debug Capability"),
        (DbcBusy("DCE set"), ExitCode.BUSY, "--takeover"),
        (DbcTimeout("DCCTRL.DCR", 5.0), ExitCode.TIMEOUT, "debug cable"),
        (DbcUndelivered("unplugged", ()), ExitCode.DEVICE_ERROR, "did not reach"),
        (PrivilegeRequired("pagemap PFN 0"), ExitCode.PERMISSION, "root"),
        (HugepagesUnavailable("nr_hugepages"), ExitCode.PERMISSION, "nr_hugepages"),
        (DmaFault(0x1000, 16), ExitCode.DEVICE_ERROR, "driver bug"),
        (
            UseAfterFree(
                0x1000,
                16,
                side="cpu",
                buffer_address=0x1000,
                buffer_size=64,
                alloc_site="a.py:1",
                free_site="a.py:2",
            ),
            ExitCode.DEVICE_ERROR,
            "used after free()",
        ),
        (PermissionError("denied"), ExitCode.PERMISSION, "root"),
        (
            SpecViolation(Finding("DBC-X", "7.6.9", "DCCTRL", "DCE=0", "DCE=1", "bad")),
            ExitCode.DEVICE_ERROR,
            "spec section",
        ),
        (DebugHostTimeout("recv: nothing within 1 s"), ExitCode.TIMEOUT, "in time"),
        (UnknownBench("moon"), ExitCode.USAGE, "hw:BDF"),
        (TraceError("bad"), ExitCode.USAGE, ".pcapng"),
        (RuntimeError("boom"), ExitCode.FAILURE, "bug in dbc-harness"),
    ],
)
def test_every_part_error_family_maps_in_one_place(
    exc: BaseException, code: ExitCode, hint_part: str
) -> None:
    explained = explain(exc)
    assert explained.code == code
    assert hint_part in explained.hint
    assert "\n" not in explained.message


def test_multi_line_messages_and_reasons_become_one_line() -> None:
    from dbc_harness.fixtures.kernel_bench.errors import GuestError

    explained = explain(GuestError("guest crashed", console="line1\nline2"))
    assert explained.message == "guest crashed"
    refused = explain(GroupNotViable("group 7 not viable", ["peer A", "peer B"]))
    assert refused.message == "group 7 not viable (peer A; peer B)"


def test_list_json_includes_the_virtual_controller() -> None:
    code, out, _ = invoke("list", "--json")
    assert code == 0
    rows = json.loads(out)
    virtual = [r for r in rows if r["bdf"] == "virtual"]
    assert len(virtual) == 1 and virtual[0]["has_dbc"] is True
    code, out, _ = invoke("list")
    assert code == 0 and "virtual" in out and "IOMMU group" in out


class ArrayMmio:
    """BAR0 as a little-endian byte array (32-bit accesses only)."""

    def __init__(self, size: int) -> None:
        self.mem = bytearray(size)
        self.reads: list[int] = []

    def read32(self, offset: int) -> int:
        self.reads.append(offset)
        return int(struct.unpack_from("<I", self.mem, offset)[0])

    def write32(self, offset: int, value: int) -> None:
        struct.pack_into("<I", self.mem, offset, value)

    def read64(self, offset: int) -> int:
        return self.read32(offset) | self.read32(offset + 4) << 32

    def write64(self, offset: int, value: int) -> None:
        self.write32(offset, value & 0xFFFF_FFFF)
        self.write32(offset + 4, value >> 32)


def qemu_like_bar0(with_dbc: bool) -> ArrayMmio:
    """Registers as QEMU's qemu-xhci shows them (hw/usb/hcd-xhci.c), optionally a DbC at 0x500."""
    m = ArrayMmio(0x10000)
    m.write32(0x00, 0x0100_0040)  # CAPLENGTH 0x40, HCIVERSION 0x0100
    m.write32(0x04, 0x0800_1040)  # HCSPARAMS1: 64 slots, 16 interrupters, 8 ports
    m.write32(0x10, 0x0008_7001)  # HCCPARAMS1: xECP = 8 dwords, AC64
    m.write32(0x14, 0x2000)  # DBOFF
    m.write32(0x18, 0x1000)  # RTSOFF
    # Supported Protocol USB 2.0 at 0x20 -> next 0x30 (4 dwords)
    m.write32(0x20, 0x0200_0402)
    m.write32(0x24, 0x2042_5355)
    m.write32(0x28, 0x0000_0405)  # ports 5..8
    m.write32(0x30, 0x0300_0002 | ((0x40 if with_dbc else 0) << 8))
    m.write32(0x34, 0x2042_5355)
    m.write32(0x38, 0x0000_0401)  # ports 1..4
    if with_dbc:
        # vendor capability 0xC0 at 0x130 -> DbC at 0x500
        m.write32(0x130, 0x0000_00C0 | (((0x500 - 0x130) // 4) << 8))
        m.write32(0x500, 0x0001_000A)  # DCID: ERST max 1
        m.write32(0x520, 0x8000_0003)  # DCCTRL: DCE LSE DCR
        m.write32(0x528, 0x0000_0003)  # DCPORTSC: CCS PED
        m.write32(0x538, 0x1D6B_0000)  # DCDDI1 vendor 1d6b
    return m


def test_info_decodes_a_controller_without_dbc() -> None:
    report = inspect_mmio(qemu_like_bar0(with_dbc=False))
    names = [r["name"] for r in report["capability_registers"]]
    assert names[:2] == ["CAPLENGTH", "HCIVERSION"]
    caplength = report["capability_registers"][0]
    assert caplength["value"] == 0x40
    assert report["ac64"] is True
    assert [(c["offset"], c["name"]) for c in report["extended_capabilities"]] == [
        (0x20, "Supported Protocol"),
        (0x30, "Supported Protocol"),
    ]
    assert "major_revision=3" in report["extended_capabilities"][1]["decoded"]
    assert report["dbc"] is None


def test_info_decodes_dbc_registers_and_state_without_touching_reserved_dwords() -> None:
    mmio = qemu_like_bar0(with_dbc=True)
    report = inspect_mmio(mmio)
    ids = [c["id"] for c in report["extended_capabilities"]]
    assert ids == [2, 2, 0xC0, 0x0A]
    dbc = report["dbc"]
    assert dbc["offset"] == 0x500
    regs = {r["name"]: r for r in dbc["registers"]}
    assert "DCE" in regs["DCCTRL"]["decoded"] and "DCR" in regs["DCCTRL"]["decoded"]
    assert regs["DCDDI1"]["value"] == 0x1D6B_0000
    assert dbc["state"].startswith("Configured")
    assert 0x500 + 0x0C not in mmio.reads and 0x500 + 0x2C not in mmio.reads


def test_info_walk_is_bounded_and_stops_on_all_ones() -> None:
    m = qemu_like_bar0(with_dbc=False)
    m.write32(0x30, 0x0300_0102)  # next pointer 1 dword: a chain of 0x...0102 forever
    for off in range(0x34, 0x10000, 4):
        m.write32(off, 0x0000_0101)  # each capability points 1 dword further
    report = inspect_mmio(m)
    assert len(report["extended_capabilities"]) == 256
    gone = ArrayMmio(0x100)
    gone.mem[:] = b"\xff" * 0x100
    gone.write32(0x10, 0x0008_0000)
    report = inspect_mmio(gone)
    assert report["extended_capabilities"][-1]["name"] == "all-ones read"


def test_restore_with_nothing_to_restore(tmp_path: Path) -> None:
    code, out, _ = invoke("restore", "--state-dir", str(tmp_path))
    assert code == 0 and "nothing to restore" in out
    code, out, _ = invoke("restore", "--state-dir", str(tmp_path), "--json")
    assert code == 0 and json.loads(out) == []


def test_bench_all_reports_a_broken_benchmark_and_exits_nonzero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbc_harness.harness import benchmarks

    (tmp_path / "fake_bench_ok.py").write_text(
        "def run(quick=False):\n    return {'speed_ratio': 2.5, 'quick': quick}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        benchmarks, "BENCHMARKS", {"ok": "fake_bench_ok", "broken": "no_such_bench_module"}
    )
    code, out, _ = invoke("bench", "all", "--json", "--quick")
    assert code == ExitCode.FAILURE
    results = json.loads(out)
    assert results["ok"] == {"speed_ratio": 2.5, "quick": True}
    assert "no_such_bench_module" in results["broken"]["error"]


def test_messages_with_brackets_are_printed_verbatim() -> None:
    code, _, err = invoke("run", "--bench", "hw:[/red][bold]")
    assert code == ExitCode.USAGE
    assert "error: '[/red][bold]' is not a PCI address" in err


def test_summary_table_shows_findings_verbatim() -> None:
    import io

    from dbc_harness.harness.app.session import EchoResult, SessionResult
    from dbc_harness.harness.app.views import session_table
    from rich.console import Console

    result = SessionResult(
        bench={"bench": "virtual [x]"},
        transitions=[(0.1, "DISABLED", "INITIALIZED")],
        echo=[EchoResult(5, False, 0.1, "got [3] of 5 bytes")],
        findings=["[DBC-STR-BLENGTH] (xHCI 1.2 7.6.9) bad [/red] length"],
    )
    buf = io.StringIO()
    Console(file=buf, width=200).print(session_table(result))
    text = buf.getvalue()
    assert "FAIL" in text and "virtual [x]" in text and "got [3] of 5 bytes" in text
    assert "[DBC-STR-BLENGTH] (xHCI 1.2 7.6.9) bad [/red] length" in text
