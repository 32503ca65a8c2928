"""The ``dbc-harness`` command line.

Commands: ``list``, ``info TARGET``, ``claim BDF``, ``run [--bench B]``, ``console TARGET``,
``send FILE``, ``recv FILE``, ``trace --out F``, ``restore``, ``bench NAME|all``, ``usbip``.
Data commands take ``--json``.

Errors: every exception from every part goes through :func:`harness.app.cli_errors.explain` (the one
mapping): one ``error:`` line, one ``hint:`` line, a documented exit code, and no traceback unless
``--debug`` is given (or ``DBC_HARNESS_DEBUG=1``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
from dbc_harness.harness import benchmarks
from dbc_harness.harness.app.cli_errors import ExitCode, explain
from rich.console import Console
from rich.markup import escape

#: where tables and live progress go
OUT = Console(highlight=False, soft_wrap=True)
#: where errors go
ERR = Console(stderr=True, highlight=False, soft_wrap=True)


def report_error(exc: BaseException) -> ExitCode:
    """Print one error line and one hint line on stderr; return the exit code."""
    explained = explain(exc)
    ERR.print(f"[bold red]error:[/] {escape(explained.message)}", highlight=False)
    ERR.print(f"[yellow]hint:[/] {escape(explained.hint)}", highlight=False)
    return explained.code


class HarnessGroup(click.Group):
    """A click group that turns any exception of a command into :func:`report_error`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            ERR.print("interrupted; everything taken was given back")
            ctx.exit(ExitCode.INTERRUPTED)
        except Exception as exc:
            if (ctx.obj or {}).get("debug") or os.environ.get("DBC_HARNESS_DEBUG") == "1":
                raise
            ctx.exit(report_error(exc))


@click.group(cls=HarnessGroup)
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.version_option(package_name="dbc-harness")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Bring up and test an xHCI Debug Capability on virtual, QEMU and real benches."""
    ctx.obj = {"debug": debug}
    # the parts log what they recover from (e.g. "DbC device error #3: ..."): one line each
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------- list


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def list_cmd(as_json: bool) -> None:
    """xHCI controllers of this machine (BDF, IDs, driver, IOMMU group, DbC), plus the virtual
    one."""
    from dbc_harness.harness.app.views import controller_rows

    rows = controller_rows()
    if as_json:
        _emit_json(rows)
        return
    from dbc_harness.harness.app.views import controllers_table

    OUT.print(controllers_table(rows))


# --------------------------------------------------------------------------------------- info


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--mode", type=click.Choice(["auto", "vfio", "sysfs"]), default="auto")
@click.option("--unsafe", is_flag=True, help="Allow sysfs mode (no DMA isolation).")
@click.option("--force", is_flag=True, help="Claim despite refusals (at your own risk).")
@click.option("--bring-up", is_flag=True, help="Start the DbC first, read, then stop it.")
def info(target: str, as_json: bool, mode: str, unsafe: bool, force: bool, bring_up: bool) -> None:
    """Decode TARGET's capability registers, extended capability list and DbC registers.

    TARGET is ``virtual`` or a PCI address (``0000:00:14.0``). A real controller is claimed
    (its USB devices disconnect while it is away from xhci_hcd), read, and given back."""
    from dbc_harness.harness.app.views import inspect_target, render_inspection

    report = inspect_target(target, mode=mode, unsafe=unsafe, force=force, bring_up=bring_up)
    if as_json:
        _emit_json(report)
    else:
        render_inspection(OUT, report)


# ---------------------------------------------------------------------------------------- run

_BENCH_HELP = "virtual (default, works anywhere), qemu (boots the kernel bench) or hw:BDF"


def _bench_options(f: Any) -> Any:
    f = click.option("--force", is_flag=True, help="hw: claim despite refusals.")(f)
    f = click.option("--unsafe", is_flag=True, help="hw: allow sysfs mode (no DMA isolation).")(f)
    f = click.option(
        "--mode", type=click.Choice(["auto", "vfio", "sysfs"]), default="auto", help="hw: claim"
    )(f)
    f = click.option(
        "--bench", "bench_spec", default="virtual", show_default=True, help=_BENCH_HELP
    )(f)
    return f


def _session_options(f: Any) -> Any:
    """Driver and virtual-bench options shared by ``run`` and ``trace``."""
    options = [
        click.option(
            "--quirk",
            "quirks",
            multiple=True,
            metavar="NAME[=VALUE]",
            help="virtual: a field problem of real parts, e.g. endpoint_ids=0/1, "
            "spurious_stall_on_clear_halt, transfer_faults=out:3:babble (repeatable).",
        ),
        click.option(
            "--lenient",
            is_flag=True,
            help="virtual: record spec findings and go on (they fail the run).",
        ),
        click.option(
            "--mmio32", is_flag=True, help="Driver: 64-bit registers as two 32-bit accesses."
        ),
        click.option(
            "--in-buffer-size",
            type=click.IntRange(1, 65536),
            default=None,
            help="Driver: bytes per receive buffer on the IN ring (default: the driver's, 1024); "
            "larger ones need a ZLP after packet-multiple messages, the host here sends.",
        ),
        click.option("--port-reset", is_flag=True, help="Reset root ports before enumeration."),
        click.option("--takeover", is_flag=True, help="Take over a DbC that is already enabled."),
    ]
    for option in options:
        f = option(f)
    return f


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of sizes") from None
    if any(s <= 0 for s in sizes):
        raise click.BadParameter("echo sizes must be positive")
    return sizes


@cli.command()
@_bench_options
@click.option(
    "--echo-sizes",
    default="1,1023,1024,1025,65536,1048576",
    show_default=True,
    help="Message sizes (bytes) echoed host -> target -> host.",
)
@click.option(
    "--throughput-mib",
    type=click.IntRange(0, 4096),
    default=16,
    show_default=True,
    help="MiB moved each way for the throughput check (0 skips it).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Bring-up deadline.")
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Record the session (.pcapng capture or .jsonl).",
)
@_session_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def run(
    bench_spec: str,
    mode: str,
    unsafe: bool,
    force: bool,
    echo_sizes: str,
    throughput_mib: int,
    timeout: float,
    trace_path: str | None,
    takeover: bool,
    port_reset: bool,
    mmio32: bool,
    in_buffer_size: int | None,
    lenient: bool,
    quirks: tuple[str, ...],
    as_json: bool,
) -> None:
    """Claim, bring the DbC up (every state transition live), echo and throughput through the
    debug host, print a summary, give everything back."""
    from dbc_harness.harness.app.session import SessionOptions, run_command

    options = SessionOptions(
        bench=bench_spec,
        claim_mode=mode,
        unsafe=unsafe,
        force=force,
        echo_sizes=_sizes(echo_sizes),
        throughput_bytes=throughput_mib << 20,
        timeout=timeout,
        trace_path=Path(trace_path) if trace_path else None,
        takeover=takeover,
        port_reset=port_reset,
        lenient=lenient,
        quirks=quirks,
        mmio32=mmio32,
        in_buffer_size=in_buffer_size,
    )
    code = run_command(options, out=ERR if as_json else OUT, as_json=as_json)
    sys.exit(int(code))


# ------------------------------------------------------------------------------------ console


def _target_spec(target: str) -> str:
    """``virtual``, ``qemu``, ``hw:BDF`` or a bare PCI address (taken as ``hw:BDF``)."""
    if target in ("virtual", "qemu") or target.startswith("hw:"):
        return target
    return f"hw:{target}"


def _claim_options(spec: str, mode: str, unsafe: bool, force: bool) -> dict[str, Any]:
    return {} if spec == "virtual" else {"mode": mode, "unsafe": unsafe, "force": force}


def _claim_flags(f: Any) -> Any:
    f = click.option("--force", is_flag=True, help="hw: claim despite refusals.")(f)
    f = click.option("--unsafe", is_flag=True, help="hw: allow sysfs mode (no DMA isolation).")(f)
    return click.option(
        "--mode", type=click.Choice(["auto", "vfio", "sysfs"]), default="auto", help="hw: claim"
    )(f)


@cli.command()
@click.argument("target", default="virtual")
@_claim_flags
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Bring-up deadline.")
@click.option(
    "--idle",
    type=float,
    default=0.5,
    show_default=True,
    help="After end of input, stop once the far end was quiet this long (s).",
)
def console(target: str, mode: str, unsafe: bool, force: bool, timeout: float, idle: float) -> None:
    """Interactive byte console over TARGET's DbC (virtual, hw:BDF or BDF).

    Typed bytes go target -> host; bytes from the debug host are printed. On the virtual bench a
    host echo peer sends everything back. End with Ctrl-D (end of input) or Ctrl-C."""
    from dbc_harness.harness.app.console import run_console

    spec = _target_spec(target)
    if sys.stdin.isatty():
        ERR.print(f"[dim]console on {escape(spec)}: type; Ctrl-D ends, Ctrl-C aborts[/]")
    result = run_console(
        spec,
        stdin_fd=sys.stdin.fileno(),
        stdout=sys.stdout.buffer,
        timeout=timeout,
        idle=idle,
        # one line a program driving the console (e.g. a bench farm's DbcHarnessDriver) waits for
        on_ready=lambda: ERR.print(f"[dim]console ready on {escape(spec)}: DbC configured[/]"),
        **_claim_options(spec, mode, unsafe, force),
    )
    ERR.print(
        f"[dim]console closed: {result.sent} bytes sent, {result.received} received, "
        f"{result.seconds:.2f} s[/]"
    )


# ------------------------------------------------------------------------------- send / recv


def _progress_bar(label: str) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=ERR,
        transient=True,
    )


def _print_rate(verb: str, result: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(
            {
                "direction": result.direction,
                "bytes": result.bytes,
                "seconds": round(result.seconds, 6),
                "MBps": round(result.MBps, 1),
                "verified": result.verified,
            }
        )
        return
    mib = result.bytes / (1 << 20)
    OUT.print(
        f"{verb} {result.bytes} bytes ({mib:.2f} MiB) {result.direction} in "
        f"{result.seconds:.3f} s: [bold]{result.MBps:.1f} MB/s[/]"
    )
    if result.verified:
        OUT.print(f"verified: {escape(result.verified)}")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_bench_options
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Bring-up deadline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def send(
    file: Path, bench_spec: str, mode: str, unsafe: bool, force: bool, timeout: float, as_json: bool
) -> None:
    """Send FILE target -> host (the DbC's OUT ring), with a progress bar and the final rate."""
    from dbc_harness.harness.app.transfer import send_file

    with _progress_bar("send") as bar:
        task = bar.add_task("send", total=file.stat().st_size)
        result = send_file(
            bench_spec,
            file,
            timeout=timeout,
            progress=lambda done, total: bar.update(task, completed=done),
            **_claim_options(bench_spec, mode, unsafe, force),
        )
    _print_rate("sent", result, as_json)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@_bench_options
@click.option(
    "--size",
    type=click.IntRange(min=0),
    default=None,
    help="Stop after this many bytes (virtual: the host sends this many).",
)
@click.option(
    "--source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="virtual: the file the debug host sends.",
)
@click.option(
    "--idle",
    type=float,
    default=2.0,
    show_default=True,
    help="Stop when the debug host was quiet this long (s).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Bring-up deadline.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def recv(
    file: Path,
    bench_spec: str,
    mode: str,
    unsafe: bool,
    force: bool,
    size: int | None,
    source: Path | None,
    idle: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Receive into FILE what the debug host sends (host -> target, the DbC's IN ring)."""
    from dbc_harness.harness.app.transfer import recv_file

    if bench_spec == "virtual" and size is None and source is None:
        raise click.UsageError("on the virtual bench give --size N or --source FILE to send")
    total = size if size is not None else (source.stat().st_size if source else None)
    with _progress_bar("recv") as bar:
        task = bar.add_task("recv", total=total)
        result = recv_file(
            bench_spec,
            file,
            size=size,
            source=source,
            timeout=timeout,
            idle=idle,
            progress=lambda done, _total: bar.update(task, completed=done),
            **_claim_options(bench_spec, mode, unsafe, force),
        )
    _print_rate("received", result, as_json)


# -------------------------------------------------------------------------------------- trace


@cli.command()
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The capture to write (.pcapng; .jsonl for every record as JSON lines).",
)
@click.option(
    "--jsonl",
    "jsonl_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every record (MMIO, TRBs, events, states) here.",
)
@_bench_options
@click.option(
    "--echo",
    "echo_count",
    type=click.IntRange(1, 10_000),
    default=4,
    show_default=True,
    help="Echo messages to record.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Bring-up deadline.")
@_session_options
def trace(
    out_path: Path,
    jsonl_path: Path | None,
    bench_spec: str,
    mode: str,
    unsafe: bool,
    force: bool,
    echo_count: int,
    timeout: float,
    takeover: bool,
    port_reset: bool,
    mmio32: bool,
    in_buffer_size: int | None,
    lenient: bool,
    quirks: tuple[str, ...],
) -> None:
    """Record a session (bring-up and N echo messages) as a capture Wireshark/tshark open."""
    from dbc_harness.fixtures.trace import TeeSink, open_trace
    from dbc_harness.harness.app.session import SessionOptions, run_session

    sizes = [(1, 64, 1024, 1025, 4096, 65536)[i % 6] for i in range(echo_count)]
    writers = [open_trace(out_path)]
    try:
        if jsonl_path is not None:
            writers.append(open_trace(jsonl_path))
        options = SessionOptions(
            bench=bench_spec,
            claim_mode=mode,
            unsafe=unsafe,
            force=force,
            echo_sizes=sizes,
            throughput_bytes=0,
            timeout=timeout,
            takeover=takeover,
            port_reset=port_reset,
            mmio32=mmio32,
            in_buffer_size=in_buffer_size,
            lenient=lenient,
            quirks=quirks,
        )
        result = run_session(options, trace=TeeSink(writers))
    finally:
        for w in writers:
            w.close()
    packets = getattr(writers[0], "packets", writers[0].records)
    OUT.print(escape(f"wrote {packets} packets to {out_path} (tshark -r {out_path})"))
    if jsonl_path is not None:
        OUT.print(escape(f"wrote {writers[1].records} records to {jsonl_path}"))
    if not result.ok:
        from dbc_harness.harness.app.views import session_table

        OUT.print(session_table(result))
        sys.exit(int(ExitCode.CHECK_FAILED))


# ------------------------------------------------------------------------------------ restore


@cli.command()
@click.argument("bdfs", nargs=-1, metavar="[BDF]...")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where claim state files live (default: the binding layer's).",
)
@click.option(
    "--include-live",
    is_flag=True,
    help="Also controllers claimed by a dbc-harness that is still running.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def restore(
    bdfs: tuple[str, ...], state_dir: Path | None, include_live: bool, as_json: bool
) -> None:
    """Give controllers back to their original drivers after a killed dbc-harness (reads the
    state files written before anything was changed). Default: every stale claim."""
    from dbc_harness.harness.binding.restore import restore_all

    restored = restore_all(state_dir, include_live=include_live, bdfs=list(bdfs) or None)
    if as_json:
        _emit_json(restored)
    elif restored:
        for item in restored:
            OUT.print(escape(item))
    else:
        OUT.print("nothing to restore")


# -------------------------------------------------------------------------------------- bench


@cli.command()
@click.argument("name", type=click.Choice([*benchmarks.BENCHMARKS, "all"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--quick", is_flag=True, help="Smaller workloads (for smoke tests).")
def bench(name: str, as_json: bool, quick: bool) -> None:
    """Run a benchmark (ratios against a baseline measured in the same run)."""
    names = list(benchmarks.BENCHMARKS) if name == "all" else [name]
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for n in names:
        if name == "all":
            try:
                results[n] = benchmarks.get(n)(quick=quick)
            except Exception as exc:
                failed = True
                results[n] = {"error": explain(exc).message}
        else:
            results[n] = benchmarks.get(n)(quick=quick)
    out = results[name] if name != "all" else results
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
    else:
        for n, res in results.items():
            click.echo(f"[{n}]")
            for k, v in sorted(res.items()):
                click.echo(f"  {k:40s} {v}")
    if failed:
        sys.exit(int(ExitCode.FAILURE))


cli.add_command(
    importlib.import_module("dbc_harness.harness.app.cli_usbip").usbip_cmd
)  # USB/IP export
cli.add_command(
    importlib.import_module("dbc_harness.harness.app.cli_claim").claim_cmd
)  # claim a controller


def main() -> None:
    cli(obj={}, standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
