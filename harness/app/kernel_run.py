"""``dbc-harness run --bench qemu`` from the host: boot the kernel bench and run there.

The QEMU bench's controller lives inside a guest (a real Linux kernel with an emulated xHCI and
an emulated Intel IOMMU, :mod:`dbc_harness.fixtures.kernel_bench`). This boots that guest once, runs
``dbc-harness run --bench qemu`` inside it (where the controller is claimed through VFIO), relays
its output and returns its exit code; a ``--trace`` is written to the run's read-write share
inside the guest and copied back. QEMU emulates no Debug Capability, so the expected result
is the clear "no Debug Capability" error with exit code 3 (``ExitCode.NO_DBC``).
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from dbc_harness.fixtures.kernel_bench import KernelBench
from dbc_harness.harness.app.cli_errors import ExitCode
from dbc_harness.harness.app.options import SessionOptions
from rich.markup import escape as esc

#: command deadline inside the guest (boot has its own deadline in the kernel bench)
GUEST_TIMEOUT = 300.0


def guest_argv(options: SessionOptions, as_json: bool) -> list[str]:
    argv = [sys.executable, "-m", "dbc_harness.harness.app.cli", "run", "--bench", "qemu"]
    argv += ["--timeout", str(options.timeout)]
    argv += ["--echo-sizes", ",".join(str(s) for s in options.echo_sizes) or "1"]
    argv += ["--throughput-mib", str(options.throughput_bytes >> 20)]
    if options.takeover:
        argv.append("--takeover")
    if options.port_reset:
        argv.append("--port-reset")
    if options.mmio32:
        argv.append("--mmio32")
    if options.in_buffer_size is not None:
        argv += ["--in-buffer-size", str(options.in_buffer_size)]
    if options.claim_mode != "auto":
        argv += ["--mode", options.claim_mode]
    if options.native_driver:
        argv += native_argv(options)
    if as_json:
        argv.append("--json")
    return argv


def native_argv(options: SessionOptions) -> list[str]:
    """``--driver`` (and ``--env``/``--entry``) for the guest. The object is compiled here on
    the host (a ``.c`` or ``reference``: fast, cached) and handed over by its absolute path:
    the guest sees the host's files read-only, and gcc under TCG would take minutes."""
    # deferred: unicorn + capstone (the native driver's CPU emulation) are heavy, rarely needed
    from dbc_harness.drivers.native.driver import resolve_object

    obj = resolve_object(options.native_driver)
    assert obj is not None  # resolve_object gives None only for None
    argv = ["--driver", str(obj.resolve())]
    if options.native_env:
        argv += ["--env", str(Path(options.native_env).resolve())]
    if options.native_entry != "dbc_init":
        argv += ["--entry", options.native_entry]
    return argv


def guest_command(options: SessionOptions, as_json: bool) -> str:
    """The shell command run in the guest; ``--trace`` goes to the run's read-write share
    (``$DBC_HARNESS_SHARE``, the same directory on the host) so it can be copied back."""
    command = " ".join(shlex.quote(a) for a in guest_argv(options, as_json))
    if options.trace_path is not None:
        command += f' --trace "$DBC_HARNESS_SHARE/trace{options.trace_path.suffix}"'
    return command


def run_in_kernel_bench(options: SessionOptions, *, out: Any, as_json: bool) -> ExitCode:
    out.print("[cyan]>[/] booting the QEMU kernel bench (qemu-xhci behind an emulated IOMMU)")
    with KernelBench(controller="qemu-xhci", iommu=True) as bench:
        result = bench.run(guest_command(options, as_json), timeout=GUEST_TIMEOUT)
        out.print(f"[dim]guest booted in {result.boot_seconds:.1f} s[/]")
        if options.trace_path is not None:
            recorded = result.run_dir / f"trace{options.trace_path.suffix}"
            if recorded.exists():
                shutil.copyfile(recorded, options.trace_path)
                out.print(f"[dim]trace copied from the guest to {esc(str(options.trace_path))}[/]")
    if result.stdout:
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
    if result.stderr:
        sys.stderr.write(result.stderr)
        sys.stderr.flush()
    try:
        return ExitCode(result.returncode)
    except ValueError:
        return ExitCode.FAILURE
