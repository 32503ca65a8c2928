"""``dbc-harness usbip``: export the virtual DbC over USB/IP so a real kernel can attach it.

The virtual xHCI runs free with our DbC driver brought up on it; the DbC is exported on
``--listen`` (loopback by default). On a machine with ``vhci_hcd``::

    sudo modprobe vhci-hcd
    sudo usbip attach -r 127.0.0.1 -b 1-1      # the kernel enumerates it; usb_debug binds
    echo hello > /dev/ttyUSB0; cat /dev/ttyUSB0  # the target side echoes (--echo, default)

``usbip detach -p PORT`` is a cable pull for the driver; attach again to plug it back in.
Ctrl-C (or ``--duration``) stops the export and gives everything back.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from dbc_harness.drivers.dbc import DbcError, DbcIdentity
from dbc_harness.drivers.dbc_api import TargetStream
from dbc_harness.drivers.tracing import TraceSink, null_sink
from dbc_harness.fixtures.bench import VirtualBench
from dbc_harness.fixtures.trace import open_trace
from dbc_harness.fixtures.usbip import UsbipError, UsbipServer
from dbc_harness.fixtures.usbip.server import check_export_address
from dbc_harness.fixtures.virtual.usbip_device import VirtualDbcDevice
from dbc_harness.harness.app import cli_signals
from dbc_harness.harness.app.cli_params import (
    MAX_HOLD_SECONDS,
    BusId,
    ListenAddress,
    OutputFile,
    Seconds,
    UsbId,
)
from dbc_harness.harness.app.cli_signals import Interrupted, guarded

if TYPE_CHECKING:
    from dbc_harness.drivers.dbc import DbcIdentity
    from dbc_harness.fixtures.usbip import UsbipServer

#: how long one driver read waits before the loop looks at the server again
READ_SLICE = 0.2


class RemoteExportRefused(Exception):
    """``--listen`` names a non-loopback address and ``--allow-remote`` was not given."""


@click.command("usbip")
@click.option(
    "--listen",
    type=ListenAddress(),
    default="127.0.0.1:3240",
    show_default=True,
    help="HOST:PORT to export on (3240 is what `usbip attach` uses).",
)
@click.option(
    "--busid", type=BusId(), default="1-1", show_default=True, help="Bus ID to export as."
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --listen address (USB/IP has no authentication).",
)
@click.option(
    "--echo/--no-echo",
    default=True,
    show_default=True,
    help="The target writes back every byte it reads.",
)
@click.option(
    "--duration",
    type=Seconds(maximum=MAX_HOLD_SECONDS),
    default=None,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option(
    "--timeout", type=Seconds(), default=10.0, show_default=True, help="Bring-up deadline."
)
@click.option(
    "--id",
    "usb_id",
    type=UsbId(),
    default="1d6b:0010",
    show_default=True,
    help="VID:PID the driver writes to DCDDI1/DCDDI2 (0525:127a: usb_debug's EDK2 'debug').",
)
@click.option("--serial", default=None, help="Serial number string (default: the driver's).")
@click.option(
    "--trace",
    "trace_path",
    type=OutputFile(),
    default=None,
    help="Record every USB/IP URB as the importer saw it (.pcapng for Wireshark, or .jsonl).",
)
def usbip_cmd(
    listen: tuple[str, int],
    busid: str,
    allow_remote: bool,
    echo: bool,
    duration: float | None,
    timeout: float,
    usb_id: tuple[int, int],
    serial: str | None,
    trace_path: Path | None,
) -> None:
    """Export the virtual DbC over USB/IP (attach it with `usbip attach -r HOST -b BUSID`)."""
    host, port = listen
    try:
        check_export_address(host, allow_remote=allow_remote)
    except UsbipError as exc:
        raise RemoteExportRefused(str(exc)) from None
    identity = _identity(usb_id, serial)
    with contextlib.ExitStack() as stack:
        trace: TraceSink = null_sink
        if trace_path is not None:
            trace = stack.enter_context(open_trace(trace_path))
        summary = _export(host, port, busid, allow_remote, echo, duration, timeout, trace, identity)
    click.echo("stopped: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


def _export(
    host: str,
    port: int,
    busid: str,
    allow_remote: bool,
    echo: bool,
    duration: float | None,
    timeout: float,
    trace: TraceSink,
    identity: DbcIdentity,
) -> dict[str, int]:
    with guarded(lambda: VirtualBench(free_running=True)) as bench:
        driver = bench.make_driver(identity=identity)
        driver.start(timeout=timeout)
        device = VirtualDbcDevice(bench.controller)
        with guarded(
            lambda: UsbipServer(
                device, host, port, busid=busid, allow_remote=allow_remote, trace=trace
            )
        ) as server:
            bound_host, bound_port = server.address
            ident = device.descriptors()
            ids = (
                f"{ident.identity.id_vendor:04x}:{ident.identity.id_product:04x}"
                if ident is not None
                else "?"
            )
            echoed = [0]
            try:  # from the first line on, a signal is the documented end of the export: exit 0
                click.echo(
                    f"exporting the virtual DbC {ids} as bus ID {busid} on "
                    f"{bound_host}:{bound_port}"
                )
                click.echo(
                    f"attach it: modprobe vhci-hcd && usbip attach -r {bound_host} -b {busid}"
                    + (f" (usbip --tcp-port {bound_port} attach ...)" if bound_port != 3240 else "")
                )
                click.echo("the DbC appears as /dev/ttyUSBn (usb_debug); Ctrl-C stops", err=True)
                _serve(driver, server, echo=echo, duration=duration, echoed=echoed)
            except (Interrupted, KeyboardInterrupt):
                cli_signals.consume()
            stats = server.stats
            return {
                "imports": stats.imports,
                "urbs": stats.urbs_completed,
                "bytes_host_to_target": stats.bytes_host_to_device,
                "bytes_target_to_host": stats.bytes_device_to_host,
                "bytes_echoed": echoed[0],
            }


def _identity(usb_id: tuple[int, int], serial: str | None) -> DbcIdentity:
    fields: dict[str, Any] = {"vendor_id": usb_id[0], "product_id": usb_id[1]}
    if serial is not None:
        fields["serial"] = serial
    return DbcIdentity(**fields)


def _serve(
    driver: TargetStream,
    server: UsbipServer,
    *,
    echo: bool,
    duration: float | None,
    echoed: list[int],
) -> None:
    """Pump the target side until a signal or ``duration``; ``echoed[0]``: bytes echoed."""
    deadline = None if duration is None else time.monotonic() + duration
    imports = 0
    attached = False
    while deadline is None or time.monotonic() < deadline:
        if server.stats.imports != imports:
            imports = server.stats.imports
            click.echo(f"importer attached (import #{imports})", err=True)
        if server.attached != attached:
            attached = server.attached
            if not attached:
                click.echo("importer detached (a cable pull for the driver)", err=True)
        try:
            data = driver.read(65536, timeout=READ_SLICE)
        except TimeoutError:
            continue
        except DbcError as exc:
            click.echo(f"driver: {exc}", err=True)
            time.sleep(READ_SLICE)
            continue
        if data and echo:
            try:
                driver.write(data)
                echoed[0] += len(data)
            except DbcError as exc:
                click.echo(f"driver: {exc}", err=True)
