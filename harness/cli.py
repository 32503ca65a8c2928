"""The ``dbc-harness`` command line."""

from __future__ import annotations

import json
import sys

import click

from harness import benchmarks


@click.group()
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Bring up and test an xHCI Debug Capability on virtual, QEMU and real benches."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("name", type=click.Choice([*benchmarks.BENCHMARKS, "all"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--quick", is_flag=True, help="Smaller workloads (for smoke tests).")
def bench(name: str, as_json: bool, quick: bool) -> None:
    """Run a benchmark (ratios against a baseline measured in the same run)."""
    names = list(benchmarks.BENCHMARKS) if name == "all" else [name]
    results = {n: benchmarks.get(n)(quick=quick) for n in names}
    out = results[name] if name != "all" else results
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
    else:
        for n, res in results.items():
            click.echo(f"[{n}]")
            for k, v in sorted(res.items()):
                click.echo(f"  {k:40s} {v}")


def main() -> None:
    cli(obj={}, standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
