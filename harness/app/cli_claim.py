"""``dbc-harness claim BDF``: take a controller from its kernel driver, report, give it back.

Claims through :func:`~.claim` (the state file is written before anything changes),
prints what the claim found (mode, IOMMU group, BAR0 size, AC64, DMA limit, Debug Capability),
then holds the controller until Ctrl-C, SIGTERM, ``--hold`` seconds, or at once with
``--check``. However it ends, the controller is stopped and the original driver bound again.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from dbc_harness.harness.app import cli_signals
from dbc_harness.harness.app.cli_params import MAX_HOLD_SECONDS, Seconds
from dbc_harness.harness.app.cli_signals import Interrupted
from dbc_harness.harness.binding.claim import claim


def _summary(info: Any) -> dict[str, Any]:
    return {
        "bdf": info.bdf,
        "mode": info.mode,
        "vfio_api": info.vfio_api,
        "original_driver": info.original_driver,
        "iommu_group": info.iommu_group,
        "bar0_size": info.bar0_size,
        "ac64": info.ac64,
        "dma_limit": info.dma_limit,
        "dbc_offset": info.dbc_offset,
        "dbc_status": info.dbc_status,
        "function_reset": info.has_function_reset,
    }


@click.command("claim")
@click.argument("bdf")
@click.option(
    "--mode",
    type=click.Choice(["auto", "vfio", "sysfs"]),
    default="auto",
    show_default=True,
    help="vfio (IOMMU), sysfs (resource0 + physical addresses), auto (vfio when possible).",
)
@click.option("--unsafe", is_flag=True, help="Allow sysfs mode (no DMA isolation).")
@click.option("--force", is_flag=True, help="Claim despite refusals (mounted disks, group peers).")
@click.option("--below-4g", is_flag=True, help="Keep DMA below 4 GiB even when AC64 = 1.")
@click.option("--check", is_flag=True, help="Claim, report, and give it back at once.")
@click.option(
    "--hold",
    type=Seconds(zero_ok=True, maximum=MAX_HOLD_SECONDS),
    default=None,
    help="Give it back after this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the claim summary as JSON.")
def claim_cmd(
    bdf: str,
    mode: str,
    unsafe: bool,
    force: bool,
    below_4g: bool,
    check: bool,
    hold: float | None,
    as_json: bool,
) -> None:
    """Claim the xHCI at BDF from its driver, report it, hold it, give it back.

    Every USB device on that controller disconnects while it is claimed. Ctrl-C or SIGTERM end
    the hold; after a kill -9, `dbc-harness restore` gives the controller back."""
    with claim(bdf, mode=mode, unsafe=unsafe, force=force, dma_below_4g=below_4g) as c:
        summary = _summary(c.info)
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
        else:
            for key, value in summary.items():
                shown = (
                    f"0x{value:x}"
                    if key in ("bar0_size", "dma_limit", "dbc_offset") and (isinstance(value, int))
                    else value
                )
                click.echo(f"{key:16s} {shown}")
        if not check:
            if not as_json:
                click.echo("claimed: Ctrl-C or SIGTERM gives it back", err=True)
            deadline = None if hold is None else time.monotonic() + hold
            try:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2)
            except (Interrupted, KeyboardInterrupt):
                # the normal way to end a hold (exit 0): leave the with-block, which gives it back
                cli_signals.consume()
    if not as_json:
        click.echo(f"given back to {summary['original_driver'] or 'no driver'}", err=True)
