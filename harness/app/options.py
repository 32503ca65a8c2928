"""What ``dbc-harness run`` was asked to do: :class:`SessionOptions` (the CLI builds it; the
session, its views and the kernel-bench relay read it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: MiB moved each way by the throughput check: long enough that thread start-up and the first
#: DMA allocations do not dominate a ~1 GB/s measurement; the emulated qemu bench moves less
THROUGHPUT_MIB = 64
THROUGHPUT_MIB_QEMU = 16


def default_throughput_mib(bench: str, asked: int | None) -> int:
    """``--throughput-mib`` as asked, else the default for ``bench``."""
    if asked is not None:
        return asked
    return THROUGHPUT_MIB_QEMU if bench == "qemu" else THROUGHPUT_MIB


@dataclass
class SessionOptions:
    bench: str = "virtual"
    claim_mode: str = "auto"
    unsafe: bool = False
    force: bool = False
    echo_sizes: list[int] = field(default_factory=lambda: [1, 1023, 1024, 1025, 65536, 1 << 20])
    throughput_bytes: int = THROUGHPUT_MIB << 20
    timeout: float = 10.0
    trace_path: Path | None = None
    takeover: bool = False
    port_reset: bool = False
    #: virtual bench: record spec findings and go on (they fail the summary) instead of stopping
    lenient: bool = False
    #: virtual bench: ``--quirk NAME[=VALUE]`` items (see :mod:`fixtures.virtual.quirk_options`)
    quirks: tuple[str, ...] = ()
    #: virtual bench: ``--part NAME``, a named part (:mod:`fixtures.virtual.parts`)
    part: str | None = None
    #: driver: 64-bit registers as two 32-bit accesses (the drivers' default; passed on to the
    #: kernel bench's run for scripts that give it)
    mmio32: bool = False
    #: driver: bytes per receive buffer posted on the IN ring (None: the driver's default)
    in_buffer_size: int | None = None
    #: a C DbC driver run under CPU emulation instead of the Python driver: ``reference``, an
    #: x86-64 ``.o`` implementing drivers/native/reference/dbc.h, or a ``.c`` (compiled now)
    native_driver: str | None = None
    #: its environment (ENV.py; None: the reference driver's) and init function
    native_env: str | None = None
    native_entry: str = "dbc_init"
