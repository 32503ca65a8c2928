"""``dbc-harness run --bench qemu`` from the host: boot the kernel bench and run there.

The QEMU bench's controller lives inside a guest (a real Linux kernel with an emulated xHCI and
an emulated Intel IOMMU, :mod:`fixtures.kernel_bench`). This boots that guest once, runs
``dbc-harness run --bench qemu`` inside it (where the controller is claimed through VFIO), relays
its output and returns its exit code. QEMU emulates no Debug Capability, so the expected result
is the clear "no Debug Capability" error with exit code 3 (``ExitCode.NO_DBC``).
"""

from __future__ import annotations

import sys
from typing import Any

from harness.cli_errors import ExitCode
from harness.session import SessionOptions

#: command deadline inside the guest (boot has its own deadline in the kernel bench)
GUEST_TIMEOUT = 300.0


def guest_argv(options: SessionOptions, as_json: bool) -> list[str]:
    argv = [sys.executable, "-m", "harness.cli", "run", "--bench", "qemu"]
    argv += ["--timeout", str(options.timeout)]
    argv += ["--echo-sizes", ",".join(str(s) for s in options.echo_sizes) or "1"]
    argv += ["--throughput-mib", str(options.throughput_bytes >> 20)]
    if options.takeover:
        argv.append("--takeover")
    if options.port_reset:
        argv.append("--port-reset")
    if options.mmio32:
        argv.append("--mmio32")
    if options.claim_mode != "auto":
        argv += ["--mode", options.claim_mode]
    if as_json:
        argv.append("--json")
    return argv


def run_in_kernel_bench(options: SessionOptions, *, out: Any, as_json: bool) -> ExitCode:
    from fixtures.kernel_bench import KernelBench

    if options.trace_path is not None:
        out.print("[yellow]note:[/] --trace is recorded inside the guest only; not kept")
    out.print("[cyan]>[/] booting the QEMU kernel bench (qemu-xhci behind an emulated IOMMU)")
    with KernelBench(controller="qemu-xhci", iommu=True) as bench:
        result = bench.run(guest_argv(options, as_json), timeout=GUEST_TIMEOUT)
    out.print(f"[dim]guest booted in {result.boot_seconds:.1f} s[/]")
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
