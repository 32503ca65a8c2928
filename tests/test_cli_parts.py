"""``--part NAME`` on the CLI: ``run``, ``trace``, ``console`` and ``info`` take the same
option, checked the same way (an unknown name is a usage error listing the parts; a part on
anything but the virtual bench is a usage error), and the virtual bench then is that part."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.app.cli_errors import ExitCode

from tests.test_cli_virtual import run_cli


def invoke(*args: str, input: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", ["run", "trace", "console", "info"])
def test_an_unknown_part_is_a_usage_error_listing_the_parts(command: str) -> None:
    args = {"info": ["info", "virtual"], "console": ["console"], "trace": ["trace"]}.get(
        command, [command]
    )
    code, _, err = invoke(*args, "--part", "amd-zen9", input=b"")
    assert code == ExitCode.USAGE
    assert "Invalid value for '--part': no part named 'amd-zen9'" in err
    assert "amd-renoir" in err and "intel-tiger-lake" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ("info", "0000:00:14.0", "--part", "generic"),
        ("console", "hw:0000:00:14.0", "--part", "generic"),
        ("console", "00:14.0", "--part", "generic"),
        ("run", "--bench", "hw:0000:00:14.0", "--part", "generic"),
    ],
)
def test_a_part_on_a_real_controller_is_a_usage_error(args: tuple[str, ...]) -> None:
    """Refused before anything is claimed (a real controller is the part it is)."""
    code, _, err = invoke(*args, input=b"")
    assert code == ExitCode.USAGE, err
    assert "error: --part applies to the virtual bench only" in err
    assert "dbc-harness list --parts" in err


def test_info_virtual_as_a_part_shows_its_registers() -> None:
    """AMD Renoir: the DbC at 0x580 in a 1 MiB BAR; with --bring-up the driver (told nothing
    about the part) configures it."""
    code, out, err = invoke("info", "virtual", "--part", "amd-renoir", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["part"].startswith("amd-renoir: AMD Renoir")
    assert report["dbc"]["offset"] == 0x580
    assert [c["offset"] for c in report["extended_capabilities"]] == [
        0x500, 0x510, 0x540, 0x580, 0x600,
    ]  # fmt: skip
    code, out, err = invoke("info", "virtual", "--part", "amd-renoir", "--json", "--bring-up")
    assert code == 0, err
    report = json.loads(out)
    assert report["driver_state"] == "CONFIGURED"
    assert report["dbc"]["state"].startswith("Configured")
    code, out, _ = invoke("info", "virtual", "--part", "renesas-upd720201")
    assert code == 0
    assert "as renesas-upd720201" in out and "DbC registers @0x1000" in out


@pytest.mark.parametrize("part", ["intel-sunrise-point", "renesas-upd720201"])
def test_console_on_a_part_echoes_stdin(part: str) -> None:
    """Sunrise Point: BIOS handoff, and no link until the USB3 root ports are reset (the
    driver decides by the PCI vendor ID); Renesas: 32-bit MMIO only (strict: a qword access
    would end the console with a finding)."""
    text = b"hello " + part.encode() + b"\n" + bytes(range(256)) + b"\n"
    proc = run_cli("console", "virtual", "--part", part, input=text)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == text
    assert b"console ready on virtual" in proc.stderr and b"console closed" in proc.stderr


def test_run_as_a_part_without_driver_options_passes() -> None:
    """No --port-reset, no --mmio32: the driver works out what the part needs."""
    code, out, err = invoke(
        "run", "--part", "intel-tiger-lake", "--echo-sizes", "1,1025", "--throughput-mib", "0",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["findings"] == []
    assert summary["bench"]["part"].startswith("intel-tiger-lake")
