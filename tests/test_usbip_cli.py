"""``dbc-harness usbip``: the export a developer runs by hand, driven as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbc_harness.fixtures.usbip import UsbipClient, devlist

CLI = [sys.executable, "-c", "from dbc_harness.harness.app.cli import main; main()"]
ROOT = Path(__file__).resolve().parents[1]


def start_export(*args: str) -> tuple[subprocess.Popen[str], tuple[str, int], str]:
    """Start the export; returns the process, its address and its two header lines (both read
    here: ``communicate()`` reads the pipe directly, so lines left in the text buffer by
    ``readline()`` would never reach it)."""
    proc = subprocess.Popen(
        [*CLI, "usbip", "--listen", "127.0.0.1:0", "--duration", "60", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first line names the address (blocks until bring-up)
    match = re.search(r"on (127\.0\.0\.1):(\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"unexpected first line {line!r}: {proc.communicate(timeout=10)}")
    header = line + proc.stdout.readline()  # the second: how to attach it
    return proc, (match.group(1), int(match.group(2))), header


def test_export_attach_echo_and_ctrl_c(tmp_path: Path) -> None:
    capture = tmp_path / "usbip.pcapng"
    proc, address, header = start_export("--trace", str(capture))
    try:
        (dev,) = devlist(*address)
        assert (dev.id_vendor, dev.id_product) == (0x1D6B, 0x0010)
        with UsbipClient.import_device(*address, busid="1-1") as client:
            assert client.bulk_out(1, b"ping over USB/IP").status == 0
            got = b""
            deadline = time.monotonic() + 10
            while len(got) < 16 and time.monotonic() < deadline:
                got += client.bulk_in(1, 1024, timeout=10).data
            assert got == b"ping over USB/IP"  # the target side echoes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "usbip attach -r 127.0.0.1 -b 1-1" in header
    assert "bytes_echoed 16" in out
    assert "importer attached" in err
    if shutil.which("tshark") is None:  # installed by .ci/setup; the file is checked anyway
        assert capture.stat().st_size > 100
        return
    fields = subprocess.run(
        ["tshark", "-r", str(capture), "-T", "fields", "-e", "usb.endpoint_address",
         "-e", "usb.capdata"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    payload = b"ping over USB/IP".hex()
    rows = [line.split("\t") for line in fields.splitlines()]
    assert any(row[-1].replace(":", "") == payload for row in rows), fields


def test_non_loopback_needs_allow_remote() -> None:
    result = subprocess.run(
        [*CLI, "usbip", "--listen", "0.0.0.0:0", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "DBC_HARNESS_DEBUG": "0"},
    )
    assert result.returncode == 1
    assert "no authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_listen_address_is_a_usage_error() -> None:
    result = subprocess.run(
        [*CLI, "usbip", "--listen", "nonsense"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def test_identity_options_reach_the_importer() -> None:
    proc, address, _ = start_export("--id", "0525:127a", "--serial", "EDK2-LIKE")
    try:
        (dev,) = devlist(*address)
        assert (dev.id_vendor, dev.id_product) == (0x0525, 0x127A)
        with UsbipClient.import_device(*address, busid="1-1") as client:
            serial = client.control(bytes.fromhex("80060303090400ff"), length=255).data
            assert serial[2:].decode("utf-16-le") == "EDK2-LIKE"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_bad_id_is_a_usage_error() -> None:
    result = subprocess.run(
        [*CLI, "usbip", "--id", "10000:1"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
