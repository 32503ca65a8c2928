"""``--quirk`` on the CLI: parsing into fixtures.virtual.Quirks, and runs that reproduce field
problems of real parts with the driver options that cope with them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from dbc_harness.fixtures.virtual.quirk_options import QuirkError, parse_quirks
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.app.cli_errors import ExitCode


def test_parse_quirks_typed_from_the_dataclass() -> None:
    q = parse_quirks(
        [
            "endpoint_ids=0/1",
            "spurious_stall_on_clear_halt",
            "no_64bit_mmio=false",
            "dcst_er_lag_us=0x20",
            "transfer_event_pointer=zero",
            "transfer_faults=out:3:babble",
            "transfer_faults=in:0",
            "unplug-after-out-bytes=4096",
        ]
    )
    assert q.endpoint_ids == (0, 1)
    assert q.spurious_stall_on_clear_halt is True and q.no_64bit_mmio is False
    assert q.dcst_er_lag_us == 32 and q.transfer_event_pointer == "zero"
    assert [(f.ring, f.td_index, f.completion) for f in q.transfer_faults] == [
        ("out", 3, "babble"),
        ("in", 0, "babble"),
    ]
    assert q.unplug_after_out_bytes == 4096
    assert parse_quirks([]) == type(q)()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("warp_drive", "no quirk named 'warp_drive'; quirks are: endpoint_ids"),
        ("endpoint_ids=7", "is not OUT/IN"),
        ("endpoint_ids=1/1", "two distinct ids"),
        ("dcst_er_lag_us=soon", "is not a number"),
        ("no_64bit_mmio=maybe", "is not true/false"),
        ("transfer_event_pointer=random", "is not one of exact, zero, nonmonotonic"),
        ("transfer_faults=sideways:1", "is not one of out, in"),
        ("transfer_faults=out", "is not RING:TD[:COMPLETION]"),
    ],
)
def test_bad_quirks_are_named_errors(item: str, message: str) -> None:
    with pytest.raises(QuirkError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_quirks([item])


def run_json(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(cli, ["run", "--json", "--throughput-mib", "1", *args])
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr


def test_babble_on_a_target_to_host_td_is_recovered_and_noted() -> None:
    code, summary, err = run_json("--quirk", "transfer_faults=out:2:babble")
    assert code == 0, err
    notes = [e for e in summary["echo"] if e["detail"]]
    assert len(notes) == 1 and notes[0]["ok"]
    assert "pipe stalled" in notes[0]["detail"] and "clear_halt" in notes[0]["detail"]
    assert summary["counters"]["errors.BabbleDetectedError"] == 1


@pytest.mark.parametrize(
    ("quirk", "driver_option"),
    [
        ("no_64bit_mmio", "--mmio32"),
        ("enumerate_after_root_port_reset", "--port-reset"),
        ("firmware_left_enabled", "--takeover"),
    ],
)
def test_quirks_pass_with_the_driver_option_that_copes(quirk: str, driver_option: str) -> None:
    code, summary, err = run_json("--quirk", quirk, driver_option)
    assert code == 0, err
    assert summary["ok"] and summary["findings"] == []


def test_a_dbc_left_enabled_without_takeover_is_refused_with_the_hint() -> None:
    code, _, err = run_json("--quirk", "firmware_left_enabled")
    assert code == ExitCode.BUSY
    assert "error: DCCTRL.DCE is already set" in err and "--takeover" in err


def test_quirks_on_a_real_bench_are_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["run", "--bench", "qemu", "--quirk", "no_64bit_mmio"])
    assert result.exit_code == ExitCode.USAGE
    assert "--quirk applies to the virtual bench only" in result.stderr
