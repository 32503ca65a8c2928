"""What the CLI shows: rows and rich tables for ``list``, ``info`` and the ``run`` summary.

Data first (plain dicts, the ``--json`` output), rendering second (rich tables), so both forms
always agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbc_harness.drivers.xhci.contexts import SUPERSPEED_CEILING_MBPS
from dbc_harness.fixtures.bench import Bench, HardwareBench, VirtualBench, parse_bench_spec
from dbc_harness.harness.app.inspect import inspect_mmio
from dbc_harness.harness.binding.discovery import list_controllers
from rich.markup import escape as esc
from rich.table import Table

if TYPE_CHECKING:
    from dbc_harness.harness.app.session import SessionResult
    from rich.console import Console

#: the row ``list`` shows for the virtual controller (always available)
VIRTUAL_ROW: dict[str, Any] = {
    "bdf": "virtual",
    "vendor_device": "-",
    "driver": "dbc_harness.fixtures.virtual",
    "iommu_group": None,
    "group_peers": [],
    "ac64": True,
    "has_dbc": True,
    "dbc_offset": 0x8700,
    "note": "virtual xHCI, spec-checking DbC",
}


def controller_rows() -> list[dict[str, Any]]:
    """Every xHCI of this machine (discovery) and the virtual one, as plain dicts."""
    rows = []
    for c in list_controllers():
        row = c.as_dict()
        row["note"] = row.pop("bar0_note", "")
        rows.append(row)
    return [*rows, dict(VIRTUAL_ROW)]


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def controllers_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="xHCI controllers", title_justify="left")
    for col in ("BDF", "IDs", "driver", "IOMMU group", "DbC", "note"):
        table.add_column(col)
    for r in rows:
        group = "-" if r["iommu_group"] is None else str(r["iommu_group"])
        if r.get("group_peers"):
            group += f" (+{len(r['group_peers'])} devices)"
        dbc = _yes_no(r["has_dbc"])
        if r.get("dbc_offset") is not None:
            dbc += f" @0x{r['dbc_offset']:x}"
        table.add_row(
            *(esc(str(x)) for x in (r["bdf"], r["vendor_device"], r["driver"] or "-", group, dbc)),
            esc(r.get("note") or ""),
        )
    return table


def session_table(result: SessionResult) -> Table:
    """The summary of ``dbc-harness run``."""
    verdict = "[bold green]PASS[/]" if result.ok else "[bold red]FAIL[/]"
    table = Table(title=f"dbc-harness run: {verdict}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("result")
    for k, v in result.bench.items():
        table.add_row(esc(k), esc(str(v)))
    path = (
        " -> ".join([result.transitions[0][1]] + [t[2] for t in result.transitions])
        if (result.transitions)
        else "-"
    )
    table.add_row("states", esc(path))
    if result.transitions:
        configured = next((t[0] for t in result.transitions if t[2] == "CONFIGURED"), None)
        if configured is not None:
            table.add_row("configured after", f"{configured:.3f} s")
    if result.skipped:
        table.add_row("echo / throughput", f"[yellow]skipped:[/] {esc(result.skipped)}")
    if result.echo:
        passed = sum(e.ok for e in result.echo)
        sizes = ", ".join(f"{e.size}" + ("" if e.ok else " [red]FAIL[/]") for e in result.echo)
        table.add_row("echo", f"{passed}/{len(result.echo)} ok (bytes: {sizes})")
        for e in result.echo:
            if e.detail:
                colour = "yellow" if e.ok else "red"
                table.add_row(f"echo {e.size} B", f"[{colour}]{esc(e.detail)}[/]")
    for direction, mbps in result.throughput_MBps.items():
        ratio = mbps / SUPERSPEED_CEILING_MBPS
        table.add_row(
            f"throughput {direction}",
            f"{mbps:.1f} MB/s ({ratio:.2f} x the SuperSpeed ceiling of "
            f"{SUPERSPEED_CEILING_MBPS} MB/s)",
        )
    if result.counters:
        shown = ", ".join(f"{k}={v}" for k, v in result.counters.items() if v not in (0, {}, []))
        table.add_row("driver counters", esc(shown) or "-")
    findings = str(len(result.findings))
    if result.findings:
        findings = f"[red]{findings}[/]: " + esc("; ".join(result.findings[:3]))
    table.add_row("spec findings", findings)
    if result.trace_path:
        table.add_row("trace", esc(result.trace_path))
    table.add_row("final state", esc(result.final_state) or "-")
    table.add_row("given back", "yes" if result.restored else "[red]no[/]")
    table.add_row("elapsed", f"{result.elapsed:.2f} s")
    return table


def inspect_target(
    target: str,
    *,
    mode: str,
    unsafe: bool,
    force: bool,
    bring_up: bool = False,
    part: str | None = None,
) -> dict[str, Any]:
    """Decoded registers of ``target`` ("virtual" or a PCI address) as a plain dict. With
    ``bring_up`` the DbC is started first (so DCCTRL/DCPORTSC show a configured DbC) and
    stopped after reading. ``part``: the virtual bench as that named part."""
    bench: Bench
    if target == "virtual":
        bench = VirtualBench(free_running=bring_up, part=part)
    else:
        bdf = parse_bench_spec(target)[1] if target.startswith("hw:") else target
        assert bdf is not None
        bench = HardwareBench(bdf, mode=mode, unsafe=unsafe, force=force)
    with bench:
        driver = None
        if bring_up:
            driver = bench.make_driver()
            driver.start(timeout=10.0)
        report = inspect_mmio(bench.mmio)
        if driver is not None:
            report["driver_state"] = driver.state.name
            driver.stop(timeout=10.0)
        report["target"] = target
        if isinstance(bench, VirtualBench) and bench.part is not None:
            report["part"] = f"{bench.part.name}: {bench.part.title}"
        return report


def render_inspection(out: Console, report: dict[str, Any]) -> None:
    part = f" as {report['part']}" if "part" in report else ""
    out.print(f"[bold]{esc(report['target'])}[/]{esc(part)}")
    caps = Table(title="capability registers", title_justify="left")
    for col in ("register", "offset", "value", "decoded"):
        caps.add_column(col)
    for r in report["capability_registers"]:
        caps.add_row(r["name"], f"0x{r['offset']:02x}", f"0x{r['value']:08x}", esc(r["decoded"]))
    out.print(caps)
    ext = Table(title="extended capabilities", title_justify="left")
    for col in ("offset", "ID", "name", "decoded"):
        ext.add_column(col)
    for r in report["extended_capabilities"]:
        ext.add_row(f"0x{r['offset']:x}", f"0x{r['id']:02x}", r["name"], esc(r["decoded"]))
    out.print(ext)
    dbc = report.get("dbc")
    if dbc is None:
        out.print("[yellow]no Debug Capability on this controller[/]")
        return
    regs = Table(title=f"DbC registers @0x{dbc['offset']:x}", title_justify="left")
    for col in ("register", "offset", "value", "decoded"):
        regs.add_column(col)
    for r in dbc["registers"]:
        width = 16 if r["value"] > 0xFFFF_FFFF else 8
        value = f"0x{r['value']:0{width}x}"
        regs.add_row(r["name"], f"+0x{r['offset']:02x}", value, esc(r["decoded"]))
    out.print(regs)
    out.print(f"DbC state: [bold]{esc(dbc['state'])}[/]")
    if "driver_state" in report:
        out.print(f"driver state while read: {report['driver_state']} (stopped afterwards)")
