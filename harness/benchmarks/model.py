"""``dbc-harness bench model``: is the virtual xHCI ever the bottleneck?

An in-benchmark minimal producer loop (fixtures.virtual.minimal, not the project's driver) runs
the model free-running (its own thread, real time) and pushes 64 KiB Normal TRBs:

* ``out_MBps``: target -> host. TRBs on the DbC OUT ring, the debug host drains ``recv``.
* ``in_MBps``: host -> target. 64 KiB buffers posted on the DbC IN ring, the host ``send``s
  4 MiB transfers; the producer reposts a buffer for every Transfer Event.
* ``events_per_s``: Transfer Events produced and consumed per second over both runs.
* ``memcpy_MBps``: the same bytes copied once in 64 KiB slices into the host's read buffer,
  measured in the same run (the floor every byte pays once); ``{out,in}_ratio_vs_memcpy``:
  what the model keeps of it.

The host application reads into one reused 4 MiB buffer (``READ_BUFFER``), as a program
streaming a debug port does. Each direction is measured ``repeats`` times (3; 1 with
``quick``) and the best run reported: the machine is shared.

Goal: >= 3000 MB/s each way (MB = 10^6 bytes).
"""

from __future__ import annotations

import os
import time
from typing import Any

from dbc_harness.drivers.xhci.trb import NORMAL
from dbc_harness.fixtures.virtual.controller import VirtualXhci
from dbc_harness.fixtures.virtual.minimal import MinimalDbcProducer

TRB_BYTES = 64 * 1024
RING_TRBS = 256
EVENT_TRBS = 1024
BUFFERS = 16  # 16 x 64 KiB data buffers reused round-robin (content does not matter here)
#: the host application's reused read buffer (recv_into); a whole ring's worth of TRBs is
#: more than it holds, so the host reads several times per doorbell
READ_BUFFER = 4 << 20
GOAL_MBPS = 3000


def _setup() -> tuple[VirtualXhci, MinimalDbcProducer]:
    # host_buffer=0: the host application reads straight off the wire (what libusb does with
    # no extra buffering), so each byte is copied once, DMA buffer -> application buffer
    x = VirtualXhci(rx_capacity=64 << 20, host_buffer=0)
    b = MinimalDbcProducer(x, ring_trbs=RING_TRBS, event_trbs=EVENT_TRBS)
    b.bring_up()
    b.events()
    return x, b


_built: dict[tuple[int, int], bytes] = {}


def _normal(b: MinimalDbcProducer, i: int) -> bytes:
    """The Normal TRB for data buffer ``i % BUFFERS`` (built once per buffer)."""
    key = (b.data.device_address, i % BUFFERS)
    trb = _built.get(key)
    if trb is None:
        trb = NORMAL.build(
            data_buffer_pointer=b.data.device_address + (i % BUFFERS) * TRB_BYTES,
            trb_transfer_length=TRB_BYTES,
            IOC=1,
            ISP=1,
            C=0,
        )
        _built[key] = trb
    return trb


def measure_out(total: int, read_buffer: int = READ_BUFFER) -> tuple[float, float, int]:
    """(MB/s, MB per CPU second, events) for ``total`` bytes target -> host, the host reading
    into one reused buffer of ``read_buffer`` bytes."""
    x, b = _setup()
    trbs = total // TRB_BYTES
    queued = received = events = in_flight = 0
    limit = RING_TRBS - 2
    sink = bytearray(read_buffer)
    for i in range(BUFFERS):  # a pattern the host must receive (not zero pages)
        b.data.view[i * TRB_BYTES : (i + 1) * TRB_BYTES] = bytes([i + 1]) * TRB_BYTES
    try:
        with x.run_free():
            t0 = time.perf_counter()
            c0 = time.process_time()
            while received < total:
                while in_flight < limit and queued < trbs:
                    b.out.put(_normal(b, queued))
                    queued += 1
                    in_flight += 1
                b.ring_doorbell(0)
                got = x.host.recv_into(sink, timeout=10.0)
                if sink[0] == 0 or sink[got - 1] == 0:
                    raise AssertionError("target -> host data did not arrive")
                sink[0] = sink[got - 1] = 0  # the next read must write them again
                received += got
                done = b.drain_events()
                events += done
                in_flight -= done
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
        # drain the last events
        deadline = time.monotonic() + 5
        while in_flight and time.monotonic() < deadline:
            x.advance(10)
            done = b.drain_events()
            events += done
            in_flight -= done
    finally:
        x.close()
    return total / elapsed / 1e6, total / cpu / 1e6, events


def measure_in(total: int, transfer: int = 4 << 20) -> tuple[float, float, int]:
    """(MB/s, MB per CPU second, events) for ``total`` bytes host -> target, sent as host
    transfers of ``transfer`` bytes."""
    x, b = _setup()
    # a real pattern (not zero pages) so the copies touch memory
    chunk = bytes(range(256)) * (transfer // 256)
    posted = events = landed = 0
    for i in range(RING_TRBS - 2):
        b.inr.put(_normal(b, i))
        posted += 1
    b.ring_doorbell(1)
    try:
        with x.run_free():
            t0 = time.perf_counter()
            c0 = time.process_time()
            while landed < total:
                landed += x.host.send(chunk, timeout=10.0)
                done = b.drain_events()
                events += done
                for i in range(done):
                    b.inr.put(_normal(b, posted + i))
                posted += done
                if done:
                    b.ring_doorbell(1)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
        # the data really landed: every buffer holds its 64 KiB slice of the pattern
        if bytes(b.data.view[:TRB_BYTES]) != chunk[:TRB_BYTES]:
            raise AssertionError("host -> target data did not land in the posted buffers")
    finally:
        x.close()
    return total / elapsed / 1e6, total / cpu / 1e6, events


def measure_memcpy(total: int, read_buffer: int = READ_BUFFER) -> float:
    """MB/s of copying ``total`` bytes once, 64 KiB at a time, from 16 source buffers into a
    reused ``read_buffer``: what moving the bytes costs without any model."""
    source = memoryview(bytes(range(256)) * (BUFFERS * TRB_BYTES // 256))
    sink = memoryview(bytearray(read_buffer))
    slots = read_buffer // TRB_BYTES
    t0 = time.perf_counter()
    for i in range(total // TRB_BYTES):
        at = (i % slots) * TRB_BYTES
        src = (i % BUFFERS) * TRB_BYTES
        sink[at : at + TRB_BYTES] = source[src : src + TRB_BYTES]
    return total / (time.perf_counter() - t0) / 1e6


def _best(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    best = max(runs, key=lambda r: r[0])
    return best[0], max(r[1] for r in runs), best[2]


def run(quick: bool = False) -> dict[str, Any]:
    total = (256 if quick else 1024) << 20
    repeats = 1 if quick else 3
    t0 = time.perf_counter()
    out_mbps, out_cpu_mbps, out_events = _best([measure_out(total) for _ in range(repeats)])
    in_mbps, in_cpu_mbps, in_events = _best([measure_in(total) for _ in range(repeats)])
    t_all = time.perf_counter() - t0
    memcpy = max(measure_memcpy(total) for _ in range(repeats))
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - platform without getloadavg
        load = -1.0
    return {
        "out_MBps": round(out_mbps, 1),
        "in_MBps": round(in_mbps, 1),
        "events_per_s": round((out_events + in_events) * repeats / max(t_all, 1e-9), 1),
        "memcpy_MBps": round(memcpy, 1),
        "out_ratio_vs_memcpy": round(out_mbps / memcpy, 3),
        "in_ratio_vs_memcpy": round(in_mbps / memcpy, 3),
        # bytes per CPU second of the whole process (model thread + producer loop): what the
        # model sustains when it gets the CPU, independent of other load on the machine
        "out_MBps_per_cpu_s": round(out_cpu_mbps, 1),
        "in_MBps_per_cpu_s": round(in_cpu_mbps, 1),
        "bytes_each_way": total,
        "trb_bytes": TRB_BYTES,
        "goal_MBps": GOAL_MBPS,
        "read_buffer": READ_BUFFER,
        "repeats": repeats,
        "loadavg_1min": load,
        "cpus": os.cpu_count() or 0,
    }
