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
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from dbc_harness.drivers.dbc.driver import IN_BUFFER_MAX
from dbc_harness.fixtures.trace import TeeSink, open_trace
from dbc_harness.fixtures.virtual.parts import PartError, all_parts, load_part
from dbc_harness.harness import benchmarks
from dbc_harness.harness.app import cli_signals
from dbc_harness.harness.app.cli_errors import ExitCode, explain
from dbc_harness.harness.app.cli_params import (
    MAX_ECHO_SIZE,
    MAX_RECV_SIZE,
    ByteCount,
    ByteCounts,
    InputFile,
    OutputFile,
    Seconds,
    same_file,
)
from dbc_harness.harness.app.cli_signals import Interrupted
from dbc_harness.harness.app.console import run_console
from dbc_harness.harness.app.options import SessionOptions, default_throughput_mib
from dbc_harness.harness.app.session import run_command, run_session
from dbc_harness.harness.app.transfer import recv_file, send_file
from dbc_harness.harness.app.views import (
    controller_rows,
    controllers_table,
    inspect_target,
    render_inspection,
    session_table,
)
from dbc_harness.harness.binding.restore import restore_all
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

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


def report_interrupt(exc: Interrupted) -> ExitCode | int:
    """One line for a signal that ended the command; its exit code (128 + signal)."""
    ERR.print(f"interrupted by {exc.name}: everything taken was given back", highlight=False)
    return exc.exit_code


class HarnessGroup(click.Group):
    """A click group whose every ending is one of the documented ones: errors of the commands
    and click's own usage errors become :func:`report_error` (``error:`` + ``hint:``, exit 2
    for usage), signals become :func:`report_interrupt` (130 / 143 / 129), never a traceback
    (unless ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        if sys.stdout is None:  # started with stdout closed (>&-): results would vanish
            raise click.UsageError(
                "standard output is closed: give it a file, a pipe or > /dev/null", ctx
            )
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:  # SIGINT before our handlers (or under a claim's own)
            raise Interrupted(signal.SIGINT) from None
        except Exception as exc:
            if (ctx.obj or {}).get("debug") or os.environ.get("DBC_HARNESS_DEBUG") == "1":
                raise
            ctx.exit(report_error(exc))

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = self._run(args, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: Any, complete_var: str | None, **extra: Any) -> int:
        try:
            try:
                rv = super().main(args, "dbc-harness", complete_var, standalone_mode=False, **extra)
            except click.exceptions.Abort as exc:  # click's form of Ctrl-C (or EOF at a prompt)
                if isinstance(exc.__context__, EOFError):
                    raise click.UsageError("end of input at a prompt") from None
                raise Interrupted(signal.SIGINT) from None
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except click.exceptions.ClickException as exc:
            no_args = type(exc).__name__ == "NoArgsIsHelpError"  # a UsageError (click >= 8.2)
            if no_args and isinstance(exc, click.UsageError) and exc.ctx is not None:
                click.echo(exc.ctx.get_help())
            if getattr(exc, "ctx", None) is None:  # the option parser gives no context
                argv = sys.argv[1:] if args is None else [str(a) for a in args]
                name = next((a for a in argv if a in self.commands), None)
                # read back by cli_errors.report_error (getattr) to name the command
                exc.command_path = f"dbc-harness {name}" if name else "dbc-harness"  # type: ignore[attr-defined]
            code = report_error(exc)
        except Interrupted as exc:
            return report_interrupt(exc)
        except KeyboardInterrupt:
            return report_interrupt(Interrupted(signal.SIGINT))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if code in {128 + sig for sig in cli_signals.SIGNALS}:
                # a claim's own handler (harness.binding.claim) ends a SIGTERM/SIGHUP this way
                return report_interrupt(Interrupted(code - 128))
        received = cli_signals.received()
        if received is not None and code != received.exit_code:
            return report_interrupt(received)  # unwound by another error on the way
        return int(code)


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
@click.option(
    "--parts", is_flag=True, help="The named parts of the virtual bench (for --part NAME)."
)
def list_cmd(as_json: bool, parts: bool) -> None:
    """xHCI controllers of this machine (BDF, IDs, driver, IOMMU group, DbC), plus the virtual
    one. With --parts: the virtual bench's named parts, what each reproduces and its sources."""
    if parts:
        _list_parts(as_json)
        return
    rows = controller_rows()
    if as_json:
        _emit_json(rows)
        return

    OUT.print(controllers_table(rows))


def _list_parts(as_json: bool) -> None:
    records = [p.describe() for p in all_parts().values()]
    if as_json:
        _emit_json(records)
        return
    table = Table(title="virtual bench parts (dbc-harness run --part NAME)")
    for column in ("part", "PCI ID", "BAR0", "DbC", "firmware", "quirks", "reproduces"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r["name"], f"{r['pci_id']} at {r['bdf']}", f"{r['bar0_size'] >> 10} KiB",
            f"0x{r['dbc_offset']:x}" + (" (shared page)" if r["dbc_shares_page"] else ""),
            r["firmware"], ", ".join(r["quirks"]) or "-", r["reproduces"],
        )  # fmt: skip
    OUT.print(table)


# ------------------------------------------------------------------------------- --part NAME


def _check_part(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--part NAME``: a known part profile (fixtures/virtual/parts), else a usage error."""
    if value is not None:
        try:
            load_part(value)
        except PartError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


#: ``--part NAME`` of run, trace, console and info (checked the same way everywhere)
_PART_OPTION = click.option(
    "--part",
    default=None,
    metavar="NAME",
    callback=_check_part,
    help="virtual: the controller is this named part, e.g. intel-tiger-lake, amd-renoir "
    "(`dbc-harness list --parts`).",
)


def _virtual_only(part: str | None, target: str) -> None:
    """A named part is a virtual bench: anything else with --part is the usage error run's
    session raises too."""
    if part is not None and target != "virtual":
        raise PartError("--part applies to the virtual bench only")


# --------------------------------------------------------------------------------------- info


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--mode", type=click.Choice(["auto", "vfio", "sysfs"]), default="auto")
@click.option("--unsafe", is_flag=True, help="Allow sysfs mode (no DMA isolation).")
@click.option("--force", is_flag=True, help="Claim despite refusals (at your own risk).")
@click.option("--bring-up", is_flag=True, help="Start the DbC first, read, then stop it.")
@_PART_OPTION
def info(
    target: str,
    as_json: bool,
    mode: str,
    unsafe: bool,
    force: bool,
    bring_up: bool,
    part: str | None,
) -> None:
    """Decode TARGET's capability registers, extended capability list and DbC registers.

    TARGET is ``virtual`` (``--part NAME``: as that named part) or a PCI address
    (``0000:00:14.0``). A real controller is claimed (its USB devices disconnect while it is
    away from xhci_hcd), read, and given back."""
    _virtual_only(part, target)
    report = inspect_target(
        target, mode=mode, unsafe=unsafe, force=force, bring_up=bring_up, part=part
    )
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
        _PART_OPTION,
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
            "--mmio32",
            is_flag=True,
            help="Driver: 64-bit registers as two 32-bit accesses (the drivers' default; kept "
            "for scripts).",
        ),
        click.option(
            "--in-buffer-size",
            type=click.IntRange(1, IN_BUFFER_MAX),
            default=None,
            help="Driver: bytes per receive buffer on the IN ring, a multiple of 1024 (default "
            "65536; above 65536 one TD of chained 64 KiB TRBs; the host here ends "
            "packet-multiple messages with a ZLP, so message boundaries are kept).",
        ),
        click.option(
            "--port-reset",
            is_flag=True,
            help="Reset the USB3 root ports right after DCE (default: the driver decides: on "
            "Intel parts, or once when nothing connects within 200 ms).",
        ),
        click.option("--takeover", is_flag=True, help="Take over a DbC that is already enabled."),
    ]
    for option in options:
        f = option(f)
    return f


#: every deadline option: finite, positive, bounded (cli_params.Seconds)
_TIMEOUT = Seconds()
_TIMEOUT_HELP = "Bring-up deadline (s); also the longest wait without progress."


@cli.command()
@_bench_options
@click.option(
    "--echo-sizes",
    type=ByteCounts(minimum=1, maximum=MAX_ECHO_SIZE, why="the host holds each echo in memory"),
    default="1,1023,1024,1025,65536,1048576",
    show_default=True,
    help="Message sizes (bytes; 64k, 1M) echoed host -> target -> host, each at most 256 MiB.",
)
@click.option(
    "--throughput-mib",
    type=click.IntRange(0, 4096),
    default=None,
    help="MiB moved each way for the throughput check (0 skips it; default 64, 16 on the "
    "emulated qemu bench: a window long enough that start-up costs do not dominate).",
)
@click.option("--timeout", type=_TIMEOUT, default=10.0, show_default=True, help=_TIMEOUT_HELP)
@click.option(
    "--trace",
    "trace_path",
    type=OutputFile(),
    default=None,
    help="Record the session (.pcapng capture or .jsonl).",
)
@_session_options
@click.option(
    "--driver",
    "native_driver",
    default=None,
    metavar="OBJ",
    help="Run this C DbC driver under CPU emulation instead of the Python driver: 'reference', "
    "an x86-64 .o implementing drivers/native/reference/dbc.h, or a .c file.",
)
@click.option(
    "--env",
    "native_env",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="ENV.py binding the C driver's kernel API (default: the reference driver's).",
)
@click.option(
    "--entry",
    "native_entry",
    default="dbc_init",
    show_default=True,
    help="The C driver's init function (dbc_init's signature).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def run(
    bench_spec: str,
    mode: str,
    unsafe: bool,
    force: bool,
    echo_sizes: list[int],
    throughput_mib: int | None,
    timeout: float,
    trace_path: Path | None,
    takeover: bool,
    port_reset: bool,
    mmio32: bool,
    in_buffer_size: int | None,
    lenient: bool,
    quirks: tuple[str, ...],
    part: str | None,
    native_driver: str | None,
    native_env: str | None,
    native_entry: str,
    as_json: bool,
) -> None:
    """Claim, bring the DbC up (every state transition live), echo and throughput through the
    debug host, print a summary, give everything back. With --driver the DbC driver is a C
    object run under CPU emulation; findings name its source lines."""
    options = SessionOptions(
        bench=bench_spec,
        claim_mode=mode,
        unsafe=unsafe,
        force=force,
        echo_sizes=echo_sizes,
        throughput_bytes=default_throughput_mib(bench_spec, throughput_mib) << 20,
        timeout=timeout,
        trace_path=trace_path,
        takeover=takeover,
        port_reset=port_reset,
        lenient=lenient,
        quirks=quirks,
        part=part,
        mmio32=mmio32,
        in_buffer_size=in_buffer_size,
        native_driver=native_driver,
        native_env=native_env,
        native_entry=native_entry,
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
@_PART_OPTION
@click.option("--timeout", type=_TIMEOUT, default=10.0, show_default=True, help=_TIMEOUT_HELP)
@click.option(
    "--idle",
    type=Seconds(),
    default=0.5,
    show_default=True,
    help="After end of input, stop once the far end was quiet this long (s).",
)
def console(
    target: str,
    mode: str,
    unsafe: bool,
    force: bool,
    part: str | None,
    timeout: float,
    idle: float,
) -> None:
    """Interactive byte console over TARGET's DbC (virtual, hw:BDF or BDF; ``--part NAME``:
    the virtual bench as that named part).

    Typed bytes go target -> host; bytes from the debug host are printed. On the virtual bench a
    host echo peer sends everything back. End with Ctrl-D (end of input) or Ctrl-C."""
    spec = _target_spec(target)
    _virtual_only(part, spec)
    claim = _claim_options(spec, mode, unsafe, force)
    if part is not None:
        claim["part"] = part
    try:
        stdin_fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):  # closed, or not a file (io.UnsupportedOperation)
        raise click.UsageError(
            "the console reads standard input, and this one is closed or not a file: "
            "give it a terminal, a pipe or a file (< /dev/null for none)"
        ) from None
    if sys.stdin.isatty():
        ERR.print(f"[dim]console on {escape(spec)}: type; Ctrl-D ends, Ctrl-C aborts[/]")
    result = run_console(
        spec,
        stdin_fd=stdin_fd,
        stdout=sys.stdout.buffer,
        timeout=timeout,
        idle=idle,
        # one line a program driving the console (e.g. a bench farm's DbcHarnessDriver) waits for
        on_ready=lambda: ERR.print(f"[dim]console ready on {escape(spec)}: DbC configured[/]"),
        **claim,
    )
    ERR.print(
        f"[dim]console closed: {result.sent} bytes sent, {result.received} received, "
        f"{result.seconds:.2f} s[/]"
    )


# ------------------------------------------------------------------------------- send / recv


def _progress_bar(label: str) -> Any:
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
@click.argument("file", type=InputFile())
@_bench_options
@click.option("--timeout", type=_TIMEOUT, default=10.0, show_default=True, help=_TIMEOUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def send(
    file: Path, bench_spec: str, mode: str, unsafe: bool, force: bool, timeout: float, as_json: bool
) -> None:
    """Send FILE target -> host (the DbC's OUT ring), with a progress bar and the final rate."""
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
@click.argument("file", type=OutputFile())
@_bench_options
@click.option(
    "--size",
    type=ByteCount(maximum=MAX_RECV_SIZE),
    default=None,
    help="Stop after this many bytes (virtual: the host sends this many); at most 1 TiB.",
)
@click.option(
    "--source",
    type=InputFile(),
    default=None,
    help="virtual: the file the debug host sends.",
)
@click.option(
    "--idle",
    type=Seconds(),
    default=2.0,
    show_default=True,
    help="Stop when the debug host was quiet this long (s).",
)
@click.option("--timeout", type=_TIMEOUT, default=10.0, show_default=True, help=_TIMEOUT_HELP)
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
    if bench_spec == "virtual" and size is None and source is None:
        raise click.UsageError("on the virtual bench give --size N or --source FILE to send")
    if source is not None and same_file(file, source):
        raise click.BadParameter(
            f"{file} is also --source: it would be emptied before it is sent", param_hint="FILE"
        )
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
    type=OutputFile(),
    help="The capture to write (.pcapng; .jsonl for every record as JSON lines).",
)
@click.option(
    "--jsonl",
    "jsonl_path",
    type=OutputFile(),
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
@click.option("--timeout", type=_TIMEOUT, default=10.0, show_default=True, help=_TIMEOUT_HELP)
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
    part: str | None,
) -> None:
    """Record a session (bring-up and N echo messages) as a capture Wireshark/tshark open."""
    if jsonl_path is not None and same_file(out_path, jsonl_path):
        raise click.BadParameter(
            f"{jsonl_path} is also --out: give two different files", param_hint="'--jsonl'"
        )
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
            part=part,
        )
        result = run_session(options, trace=TeeSink(writers))
    finally:
        for w in writers:
            w.close()
    packets = getattr(writers[0], "packets", writers[0].records)
    if out_path.suffix.lower() == ".pcapng":
        OUT.print(escape(f"wrote {packets} packets to {out_path} (tshark -r {out_path})"))
    else:  # JSON lines: not a capture, one record per line
        OUT.print(
            escape(
                f"wrote {packets} records to {out_path} (JSON lines, one MMIO access, TRB, event "
                f"or state change per line: jq . {out_path}; .pcapng is the Wireshark capture)"
            )
        )
    if jsonl_path is not None:
        OUT.print(escape(f"wrote {writers[1].records} records to {jsonl_path}"))
    if not result.ok:
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
@click.argument("name", type=click.Choice([*benchmarks.BENCHMARKS, "all"]), metavar="NAME")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--quick", is_flag=True, help="Smaller workloads (for smoke tests).")
@click.option(
    "--backend",
    type=click.Choice(["emulated", "hugepage"]),
    default=None,
    help="allocator only: DMA backend (default emulated; hugepage reserves and restores pages).",
)
def bench(name: str, as_json: bool, quick: bool, backend: str | None) -> None:
    """Run a benchmark (ratios against a baseline measured in the same run)."""
    if backend is not None and name != "allocator":
        raise click.UsageError("--backend applies to `bench allocator` only")
    options: dict[str, Any] = {"backend": backend} if backend is not None else {}
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
            results[n] = benchmarks.get(n)(quick=quick, **options)
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


def main() -> NoReturn:
    """Run one command and exit with its code (``dbc-harness`` starts in :mod:`.entry`, which
    installs the signal handlers before this module is imported). A signal after the command
    ended (while the interpreter shuts down) is only recorded, never a traceback."""
    cli_signals.install()
    cli_signals.tolerate_encoding()
    try:
        code = cli.main(obj={}, standalone_mode=False)
        cli_signals.hold()
    except Interrupted as exc:  # landed between the command's end and hold()
        cli_signals.hold()
        code = report_interrupt(exc)
    late = cli_signals.received()
    if late is not None and code != late.exit_code:
        code = report_interrupt(late)
    sys.exit(int(code))


if __name__ == "__main__":
    sys.exit(main())
