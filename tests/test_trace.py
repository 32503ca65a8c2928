"""Trace writers: captures decoded by Debian's tshark, JSON lines, and bad input."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from dbc_harness.fixtures.trace import (
    MemoryTrace,
    PcapngTraceWriter,
    TeeSink,
    TraceError,
    open_trace,
)
from dbc_harness.fixtures.trace_pcapng import USBMON_HEADER, read_packets
from hypothesis import given, settings
from hypothesis import strategies as st

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (.ci/setup)")

FIELDS = (
    "usb.urb_id",
    "usb.urb_type",
    "usb.endpoint_address",
    "usb.transfer_type",
    "usb.urb_status",
    "usb.urb_len",
    "usb.capdata",
    "frame.comment",
)


def tshark_rows(path: Path) -> list[dict[str, str]]:
    assert TSHARK is not None
    args = [TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in out.splitlines()]


def payload(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


@needs_tshark
def test_tshark_decodes_bulk_payloads_comments_and_stall(tmp_path: Path) -> None:
    sizes = [1, 2, 1023, 1024, 1025, 4096]
    path = tmp_path / "echo.pcapng"
    with PcapngTraceWriter(path, clock=iter(range(1000, 2000)).__next__) as trace:
        for i, n in enumerate(sizes):
            data = payload(n, i)
            # host -> target (USB OUT): data on the submit, none on the completion
            trace("urb", stage="S", direction="out", data=data, comment=f"Normal #{i} len={n}")
            trace("urb", stage="C", direction="out", length=n, comment=f"Transfer Event #{i}")
            # target -> host (USB IN): no data on the submit, data on the completion
            trace("urb", stage="S", direction="in", length=1024 * 64)
            trace("urb", stage="C", direction="in", data=data, comment=f"IN #{i}")
        trace("urb", stage="S", direction="in", length=512, comment="Normal stall")
        trace("urb", stage="C", direction="in", status=-32, comment="Transfer Event cc=StallError")
    rows = tshark_rows(path)
    assert len(rows) == 4 * len(sizes) + 2
    for i, n in enumerate(sizes):
        s_out, c_out, s_in, c_in = rows[4 * i : 4 * i + 4]
        assert s_out["usb.urb_type"] == "'S'" and c_out["usb.urb_type"] == "'C'"
        assert s_out["usb.urb_id"] == c_out["usb.urb_id"]
        assert s_in["usb.urb_id"] == c_in["usb.urb_id"] != s_out["usb.urb_id"]
        assert s_out["usb.endpoint_address"] == "0x01"
        assert c_in["usb.endpoint_address"] == "0x81"
        assert s_out["usb.transfer_type"] == "0x03"
        assert bytes.fromhex(s_out["usb.capdata"]) == payload(n, i)
        assert bytes.fromhex(c_in["usb.capdata"]) == payload(n, i)
        assert c_out["usb.capdata"] == "" and s_in["usb.capdata"] == ""
        assert s_out["usb.urb_status"] == "-115" and c_in["usb.urb_status"] == "0"
        assert s_out["frame.comment"] == f"Normal #{i} len={n}"
        assert c_out["frame.comment"] == f"Transfer Event #{i}"
        assert c_in["frame.comment"] == f"IN #{i}"
    stall = rows[-1]
    assert stall["usb.urb_status"] == "-32"
    assert stall["frame.comment"] == "Transfer Event cc=StallError"
    assert stall["usb.urb_id"] == rows[-2]["usb.urb_id"]


@needs_tshark
def test_snaplen_truncates_capture_but_keeps_original_length(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcapng"
    with PcapngTraceWriter(path, snaplen=64 + 100) as trace:
        trace("urb", stage="S", direction="out", data=payload(5000, 3))
    (row,) = tshark_rows(path)
    assert bytes.fromhex(row["usb.capdata"]) == payload(100, 3)
    assert row["usb.urb_len"] == "5000"


@needs_tshark
def test_missing_comment_names_the_ring_its_last_trb_or_the_last_event(tmp_path: Path) -> None:
    path = tmp_path / "fallback.pcapng"
    with PcapngTraceWriter(path) as trace:
        trace("urb", stage="S", direction="out", data=b"xyz")
        trace("urb", stage="C", direction="out", length=3)
        trace("trb", ring="IN", address=0x1000, text="Normal ptr=0x2000 len=1024 IOC ISP C=1")
        trace("trb", ring="OUT", address=0x3000, text="Normal ptr=0x4000 len=3 IOC C=1")
        trace("urb", stage="S", direction="in", length=1024)
        trace("urb", stage="S", direction="out", data=b"abc")
        trace("event", address=0x5000, text="Transfer Event ptr=0x3000 cc=Success")
        trace("urb", stage="C", direction="in", data=b"abc")
        trace("state", old="Enabled", new="Configured")
    rows = tshark_rows(path)
    assert [r["frame.comment"] for r in rows] == [
        "host sends 3 bytes to 0x01 (lands on the DbC IN ring)",
        "3 bytes to 0x01 (DbC IN ring)",
        "host requests up to 1024 bytes from 0x81 (DbC OUT ring; last TRB queued there: "
        "Normal ptr=0x4000 len=3 IOC C=1)",
        "host sends 3 bytes to 0x01 (lands on the DbC IN ring; last TRB queued there: "
        "Normal ptr=0x2000 len=1024 IOC ISP C=1)",
        "after event: Transfer Event ptr=0x3000 cc=Success",
    ]


def test_usbmon_header_layout_matches_linux() -> None:
    stream = io.BytesIO()
    trace = PcapngTraceWriter(stream, clock=lambda: 12.5)
    trace("urb", stage="C", direction="in", data=b"xy", urb_id=0x42, status=-32)
    raw = stream.getvalue()
    # the EPB is last: type 6, then header starts 28 bytes into the block
    epb = raw.rindex(b"\x06\x00\x00\x00")
    fields = USBMON_HEADER.unpack_from(raw, epb + 28)
    assert fields[0] == 0x42 and fields[1] == b"C" and fields[2] == 3 and fields[3] == 0x81
    assert fields[6] == ord("-") and fields[7] == 0  # no setup, data present
    assert (fields[8], fields[9]) == (12, 500_000)
    assert fields[10] == -32 and fields[11] == 2 and fields[12] == 2
    assert raw[epb + 28 + 64 : epb + 28 + 66] == b"xy"


def test_urb_ids_pair_by_endpoint_when_not_given() -> None:
    stream = io.BytesIO()
    trace = PcapngTraceWriter(stream)
    trace("urb", stage="S", direction="in", length=8)
    trace("urb", stage="S", direction="out", data=b"a")
    trace("urb", stage="S", direction="in", length=8)
    trace("urb", stage="C", direction="out", length=1)
    trace("urb", stage="C", direction="in", data=b"b")
    trace("urb", stage="C", direction="in", data=b"c")
    trace("urb", stage="S", direction="out", urb_id="mine", data=b"d")
    trace("urb", stage="C", direction="out", urb_id="mine", length=1)
    ids = [(p.event, p.epnum, p.urb_id) for p in read_packets(stream.getvalue())]
    assert ids == [
        ("S", 0x81, 1),
        ("S", 0x01, 2),
        ("S", 0x81, 3),
        ("C", 0x01, 2),
        ("C", 0x81, 1),  # oldest open IN submit completes first
        ("C", 0x81, 3),
        ("S", 0x01, 4),
        ("C", 0x01, 4),
    ]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"stage": "X", "direction": "in"}, "stage"),
        ({"stage": "S", "direction": "sideways"}, "direction"),
        ({"stage": "S", "direction": "out", "data": "text"}, "data"),
        ({"stage": "S", "direction": "out", "setup": b"\0" * 7}, "setup"),
    ],
)
def test_bad_urb_records_are_named_errors_and_lose_nothing(
    tmp_path: Path, fields: dict[str, object], named: str
) -> None:
    path = tmp_path / "bad.pcapng"
    trace = PcapngTraceWriter(path)
    trace("urb", stage="S", direction="out", data=b"kept")
    with pytest.raises(TraceError, match=named):
        trace("urb", **fields)
    trace("urb", stage="C", direction="out", length=4)
    trace.close()
    assert trace.packets == 2
    assert path.read_bytes().count(b"kept") == 1


def test_writes_after_close_and_bad_paths_are_named_errors(tmp_path: Path) -> None:
    trace = PcapngTraceWriter(tmp_path / "a.pcapng")
    trace.close()
    trace.close()  # idempotent
    with pytest.raises(TraceError, match="closed"):
        trace("urb", stage="S", direction="in")
    with pytest.raises(TraceError, match="cannot create"):
        PcapngTraceWriter(tmp_path / "missing-dir" / "a.pcapng")
    with pytest.raises(TraceError, match="unknown trace format"):
        open_trace(tmp_path / "a.txt")
    with pytest.raises(TraceError, match="snaplen"):
        PcapngTraceWriter(io.BytesIO(), snaplen=10)


def test_json_lines_keep_every_kind_with_bytes_as_hex(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with open_trace(path, clock=lambda: 3.0) as trace:
        trace("state", old="Disabled", new="Initialized")
        trace("mmio", op="w", offset=0x8720, value=0x8000_0000, width=32)
        trace("urb", stage="S", direction="out", data=b"\x00\xff")
        trace("custom", ts=7.5, note={1, 2})
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["state", "mmio", "urb", "custom"]
    assert lines[0] == {"ts": 3.0, "kind": "state", "old": "Disabled", "new": "Initialized"}
    assert lines[2]["data"] == "00ff"
    assert lines[3]["ts"] == 7.5 and sorted(lines[3]["note"]) == [1, 2]


def test_tee_calls_every_sink_then_raises_the_first_error() -> None:
    kept = MemoryTrace()
    bad = PcapngTraceWriter(io.BytesIO())
    tee = TeeSink([bad, kept])
    with pytest.raises(TraceError):
        tee("urb", stage="?", direction="in")
    assert kept.records[0][0] == "urb"
    later = MemoryTrace()
    kept.replay(later)
    assert later.of_kind("urb") == [{"stage": "?", "direction": "in"}]


def test_memory_trace_bound_counts_dropped() -> None:
    mem = MemoryTrace(limit=2)
    for i in range(5):
        mem("state", new=str(i))
    assert [f["new"] for f in mem.of_kind("state")] == ["3", "4"]
    assert mem.dropped == 3


def test_writers_are_thread_safe() -> None:
    stream = io.BytesIO()
    trace = PcapngTraceWriter(stream)

    def produce(direction: str) -> None:
        for i in range(300):
            trace("urb", stage="S", direction=direction, data=bytes([i & 0xFF]) * 10)

    threads = [threading.Thread(target=produce, args=(d,)) for d in ("in", "out", "in")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert trace.packets == 900
    packets = read_packets(stream.getvalue())
    assert len(packets) == 900
    assert sorted(p.data for p in packets) == sorted(
        [bytes([i & 0xFF]) * 10 for i in range(300)] * 3
    )


urb_records = st.lists(
    st.tuples(
        st.sampled_from(["S", "C"]),
        st.sampled_from(["in", "out"]),
        st.binary(max_size=3000),
        st.one_of(st.none(), st.text(min_size=1, max_size=40)),
        st.sampled_from([0, -32, -71, -115]),
    ),
    max_size=20,
)


@settings(max_examples=50, deadline=None)
@given(records=urb_records, snap=st.integers(min_value=64, max_value=4096))
def test_every_record_reads_back_exactly(
    records: list[tuple[str, str, bytes, str | None, int]], snap: int
) -> None:
    stream = io.BytesIO()
    trace = PcapngTraceWriter(stream, snaplen=snap)
    for stage, direction, data, comment, status in records:
        trace("urb", stage=stage, direction=direction, data=data, comment=comment, status=status)
    packets = read_packets(stream.getvalue())
    assert len(packets) == len(records)
    for packet, (stage, direction, data, comment, status) in zip(packets, records, strict=True):
        assert packet.event == stage
        assert packet.epnum == (0x81 if direction == "in" else 0x01)
        assert packet.status == status
        assert packet.length == len(data)
        assert packet.data == data[: snap - 64]
        if comment is not None:
            assert packet.comment == comment
        else:
            assert packet.comment  # a default naming the ring
