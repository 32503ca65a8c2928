"""The CLI's main jobs end to end on the virtual bench: run, trace, console, send, recv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbc_harness.fixtures.trace_pcapng import read_packets
from dbc_harness.harness.app.cli import cli
from dbc_harness.harness.app.session import _pattern

CLI = [sys.executable, "-m", "dbc_harness.harness.app.cli"]
TSHARK = shutil.which("tshark")


def run_cli(
    *args: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [*CLI, *args], input=input, capture_output=True, timeout=timeout, env=env, check=False
    )


def test_run_on_the_virtual_bench_shows_transitions_and_a_passing_summary() -> None:
    result = CliRunner().invoke(
        cli, ["run", "--echo-sizes", "1,1024,1025,65537", "--throughput-mib", "2"]
    )
    out = result.stdout
    assert result.exit_code == 0, out + result.stderr
    assert "state DISABLED -> INITIALIZED" in out
    assert "-> CONFIGURED" in out
    assert "PASS" in out
    assert "echo" in out and "4/4 ok" in out
    assert "throughput target_to_host" in out and "throughput host_to_target" in out
    assert "given back" in out


def test_run_json_summary() -> None:
    result = CliRunner().invoke(
        cli, ["run", "--json", "--echo-sizes", "1,4096", "--throughput-mib", "1"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert [e["size"] for e in summary["echo"]] == [1, 4096]
    assert all(e["ok"] for e in summary["echo"])
    assert summary["throughput_MBps"]["target_to_host"] > 0
    assert summary["throughput_MBps"]["host_to_target"] > 0
    states = [t[2] for t in summary["transitions"]]
    assert "CONFIGURED" in states and states[-1] == "DISABLED"
    assert summary["findings"] == [] and summary["restored"] is True


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed (.ci/setup)")
def test_trace_writes_a_capture_tshark_decodes_with_the_echo_payloads(tmp_path: Path) -> None:
    cap = tmp_path / "session.pcapng"
    jsonl = tmp_path / "session.jsonl"
    result = CliRunner().invoke(
        cli, ["trace", "--out", str(cap), "--jsonl", str(jsonl), "--echo", "3"]
    )
    assert result.exit_code == 0, result.stderr
    assert f"to {cap}" in result.stdout
    sizes = [1, 64, 1024]
    payloads = b"".join(_pattern(n, i) for i, n in enumerate(sizes))
    assert TSHARK is not None  # the skipif above
    out = subprocess.run(
        [TSHARK, "-r", str(cap), "-T", "fields", "-E", "separator=|", "-e", "usb.urb_type",
         "-e", "usb.endpoint_address", "-e", "usb.capdata", "-e", "frame.comment"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("|") for line in out.splitlines()]
    host_to_target = b"".join(bytes.fromhex(r[2]) for r in rows if r[0] == "'S'" and r[1] == "0x01")
    target_to_host = b"".join(bytes.fromhex(r[2]) for r in rows if r[0] == "'C'" and r[1] == "0x81")
    assert host_to_target == payloads
    assert target_to_host == payloads
    data_rows = [r for r in rows if r[2]]
    assert data_rows and all(r[3] for r in data_rows), "every data packet names its TRB/event"
    kinds = {json.loads(line)["kind"] for line in jsonl.read_text().splitlines()}
    assert {"state", "urb"} <= kinds
    # the pcapng reader agrees with tshark on the packet count
    assert len(read_packets(cap.read_bytes())) == len(rows)


def test_console_echoes_stdin_lines_through_the_virtual_debug_host() -> None:
    text = b"hello target\nsecond line\n" + bytes(range(256)) + b"\n"
    proc = run_cli("console", "virtual", input=text)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == text
    assert b"console closed" in proc.stderr


def test_send_and_recv_files_with_rate_and_verification(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 * (1 << 20) + 17))
    proc = CliRunner().invoke(cli, ["send", str(src)])
    out = proc.stdout
    assert proc.exit_code == 0, proc.stderr
    assert f"sent {src.stat().st_size} bytes" in out and "MB/s" in out
    assert "target_to_host" in out and "SHA-256" in out

    dst = tmp_path / "got.bin"
    proc = CliRunner().invoke(cli, ["recv", str(dst), "--source", str(src), "--json"])
    assert proc.exit_code == 0, proc.stderr
    assert dst.read_bytes() == src.read_bytes()
    result = json.loads(proc.stdout)
    assert result["direction"] == "host_to_target" and result["bytes"] == src.stat().st_size
    assert result["MBps"] > 0 and "SHA-256" in result["verified"]


def test_recv_on_virtual_needs_a_size_or_source(tmp_path: Path) -> None:
    proc = run_cli("recv", str(tmp_path / "x.bin"))
    assert proc.returncode == 2  # a usage error, in the same error:/hint: form as the others
    err = proc.stderr.decode()
    assert "error: on the virtual bench give --size N or --source FILE" in err
    assert "hint: usage: dbc-harness recv [OPTIONS] FILE" in err
    assert "Traceback" not in err


def test_info_virtual_before_and_after_bring_up() -> None:
    result = CliRunner().invoke(cli, ["info", "virtual", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    ids = [c["id"] for c in report["extended_capabilities"]]
    assert ids[:3] == [1, 2, 2] and 0x0A in ids
    assert report["dbc"]["offset"] == 0x8700
    assert report["dbc"]["state"].startswith("DbC-Off")
    result = CliRunner().invoke(cli, ["info", "virtual", "--json", "--bring-up"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["driver_state"] == "CONFIGURED"
    assert report["dbc"]["state"].startswith("Configured")
    regs = {r["name"]: r for r in report["dbc"]["registers"]}
    assert "DCE" in regs["DCCTRL"]["decoded"] and "DCR" in regs["DCCTRL"]["decoded"]
    assert regs["DCDDI1"]["value"] >> 16 == 0x1D6B
    result = CliRunner().invoke(cli, ["info", "virtual"])
    assert result.exit_code == 0
    assert "DbC registers @0x8700" in result.stdout and "DbC state:" in result.stdout


def test_console_on_a_terminal_echoes_typed_lines_and_ends_on_ctrl_d() -> None:
    import pty
    import time

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(
        [*CLI, "console", "virtual"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    try:
        time.sleep(0.5)
        os.write(master, b"typed on a tty\n")
        time.sleep(0.5)
        os.write(master, b"\x04")  # Ctrl-D on an empty line: end of input
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, err.decode()
    assert out == b"typed on a tty\n"
    assert b"Ctrl-D ends" in err and b"console closed: 15 bytes sent, 15 received" in err


@pytest.mark.parametrize("buffer_size", ["65536", "262144"])
def test_run_with_large_receive_buffers_sends_zlps_and_passes(buffer_size: str) -> None:
    """Receive buffers of 64 KiB, and of 256 KiB (one TD of four chained TRBs): echoes that
    end in any of its TRBs or fill it exactly keep their boundaries."""
    result = CliRunner().invoke(
        cli,
        ["run", "--json", "--in-buffer-size", buffer_size, "--echo-sizes",
         "1024,2048,65536,70000,200000,262144,300000", "--throughput-mib", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] and all(e["ok"] and not e["detail"] for e in summary["echo"])
    assert "ZLP" in summary["bench"]["debug host"]
