"""``dbc-harness bench codec``: the derived fast codec against a hand-written struct+mask
baseline and against construct, per TRB, plus a whole-ring cycle scan.

The baseline below is deliberately a hand-written copy of two layouts (Normal, Transfer Event):
it is the yardstick the generated code is measured against, and the run checks that it gives the
same bytes and fields as the fast codec before timing anything. Timings are the minimum over
interleaved rounds (the machine is shared), ratios are taken between those minima.
"""

from __future__ import annotations

import math
import struct
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
from dbc_harness.drivers.xhci.ring import find_cycle_flip, trb_array
from dbc_harness.drivers.xhci.trb import NORMAL, TRANSFER_EVENT, TRB_SIZE, cycle_of

# -- the plain struct+mask baseline (hand-written on purpose, see module docstring) -----------

_QII = struct.Struct("<QII")
_unpack_from = _QII.unpack_from
_pack = _QII.pack


def struct_parse_normal(buf: Any, offset: int = 0) -> dict[str, int]:
    w0, w2, w3 = _unpack_from(buf, offset)
    return {
        "data_buffer_pointer": w0,
        "interrupter_target": w2 >> 22,
        "td_size": (w2 >> 17) & 0x1F,
        "trb_transfer_length": w2 & 0x1FFFF,
        "rsvdz3_16": w3 >> 16,
        "trb_type": (w3 >> 10) & 0x3F,
        "BEI": (w3 >> 9) & 1,
        "rsvdz3_7": (w3 >> 7) & 3,
        "IDT": (w3 >> 6) & 1,
        "IOC": (w3 >> 5) & 1,
        "CH": (w3 >> 4) & 1,
        "NS": (w3 >> 3) & 1,
        "ISP": (w3 >> 2) & 1,
        "ENT": (w3 >> 1) & 1,
        "C": w3 & 1,
    }


def struct_build_normal(
    *,
    data_buffer_pointer: int = 0,
    interrupter_target: int = 0,
    td_size: int = 0,
    trb_transfer_length: int = 0,
    trb_type: int = 1,
    BEI: int = 0,
    IDT: int = 0,
    IOC: int = 0,
    CH: int = 0,
    NS: int = 0,
    ISP: int = 0,
    ENT: int = 0,
    C: int = 0,
) -> bytes:
    return _pack(
        data_buffer_pointer & 0xFFFF_FFFF_FFFF_FFFF,
        ((interrupter_target & 0x3FF) << 22)
        | ((td_size & 0x1F) << 17)
        | (trb_transfer_length & 0x1FFFF),
        ((trb_type & 0x3F) << 10)
        | ((BEI & 1) << 9)
        | ((IDT & 1) << 6)
        | ((IOC & 1) << 5)
        | ((CH & 1) << 4)
        | ((NS & 1) << 3)
        | ((ISP & 1) << 2)
        | ((ENT & 1) << 1)
        | (C & 1),
    )


def struct_parse_transfer_event(buf: Any, offset: int = 0) -> dict[str, int]:
    w0, w2, w3 = _unpack_from(buf, offset)
    return {
        "trb_pointer": w0,
        "completion_code": w2 >> 24,
        "trb_transfer_length": w2 & 0xFFFFFF,
        "slot_id": w3 >> 24,
        "rsvdz3_21": (w3 >> 21) & 7,
        "endpoint_id": (w3 >> 16) & 0x1F,
        "trb_type": (w3 >> 10) & 0x3F,
        "rsvdz3_3": (w3 >> 3) & 0x7F,
        "ED": (w3 >> 2) & 1,
        "rsvdz3_1": (w3 >> 1) & 1,
        "C": w3 & 1,
    }


def struct_build_transfer_event(
    *,
    trb_pointer: int = 0,
    completion_code: int = 0,
    trb_transfer_length: int = 0,
    slot_id: int = 0,
    endpoint_id: int = 0,
    trb_type: int = 32,
    ED: int = 0,
    C: int = 0,
) -> bytes:
    return _pack(
        trb_pointer & 0xFFFF_FFFF_FFFF_FFFF,
        ((completion_code & 0xFF) << 24) | (trb_transfer_length & 0xFFFFFF),
        ((slot_id & 0xFF) << 24)
        | ((endpoint_id & 0x1F) << 16)
        | ((trb_type & 0x3F) << 10)
        | ((ED & 1) << 2)
        | (C & 1),
    )


# -- measurement ------------------------------------------------------------------------------


def _interleaved_min_ns(
    stmts: dict[str, str], env: dict[str, Any], number: int, rounds: int
) -> dict[str, float]:
    timers = {k: timeit.Timer(s, globals=env) for k, s in stmts.items()}
    best = dict.fromkeys(stmts, math.inf)
    for _ in range(rounds):
        for k, t in timers.items():
            best[k] = min(best[k], t.timeit(number) / number * 1e9)
    return best


def _min_us(fn: Callable[[], object], number: int, rounds: int) -> float:
    t = timeit.Timer(fn)
    return min(t.timeit(number) / number for _ in range(rounds)) * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    # many short interleaved rounds, minimum of each: robust against a shared, loaded machine
    number = 200 if quick else 500
    rounds = 20 if quick else 200
    construct_number = 20 if quick else 100

    normal_kw = dict(data_buffer_pointer=0x1_0000_2000, trb_transfer_length=512, IOC=1, C=1)
    event_kw = dict(
        trb_pointer=0x1_0000_2000, completion_code=1, trb_transfer_length=12, endpoint_id=1, C=1
    )
    normal = NORMAL.build(**normal_kw)
    event = TRANSFER_EVENT.build(**event_kw)
    # the baseline must be an honest equivalent before it is a yardstick
    if struct_build_normal(**normal_kw) != normal or struct_parse_normal(normal) != NORMAL.parse(
        normal
    ):
        raise AssertionError("struct baseline disagrees with the fast codec (Normal)")
    if struct_build_transfer_event(**event_kw) != event or struct_parse_transfer_event(
        event
    ) != TRANSFER_EVENT.parse(event):
        raise AssertionError("struct baseline disagrees with the fast codec (Transfer Event)")

    env: dict[str, Any] = {
        "fast_parse_n": NORMAL.parse,
        "fast_build_n": NORMAL.build,
        "fast_parse_e": TRANSFER_EVENT.parse,
        "fast_build_e": TRANSFER_EVENT.build,
        "struct_parse_n": struct_parse_normal,
        "struct_build_n": struct_build_normal,
        "struct_parse_e": struct_parse_transfer_event,
        "struct_build_e": struct_build_transfer_event,
        "construct_parse_n": NORMAL.construct.parse,
        "construct_build_n": NORMAL.construct.build,
        "construct_parse_e": TRANSFER_EVENT.construct.parse,
        "normal": normal,
        "event": event,
        "nested_n": NORMAL.construct.parse(normal),
    }
    n_args = "data_buffer_pointer=0x100002000, trb_transfer_length=512, IOC=1, C=1"
    e_args = (
        "trb_pointer=0x100002000, completion_code=1, trb_transfer_length=12, endpoint_id=1, C=1"
    )
    fast = _interleaved_min_ns(
        {
            "fast_parse_normal": "fast_parse_n(normal)",
            "struct_parse_normal": "struct_parse_n(normal)",
            "fast_build_normal": f"fast_build_n({n_args})",
            "struct_build_normal": f"struct_build_n({n_args})",
            "fast_parse_transfer_event": "fast_parse_e(event)",
            "struct_parse_transfer_event": "struct_parse_e(event)",
            "fast_build_transfer_event": f"fast_build_e({e_args})",
            "struct_build_transfer_event": f"struct_build_e({e_args})",
        },
        env,
        number,
        rounds,
    )
    slow = _interleaved_min_ns(
        {
            "construct_parse_normal": "construct_parse_n(normal)",
            "construct_build_normal": "construct_build_n(nested_n)",
            "construct_parse_transfer_event": "construct_parse_e(event)",
        },
        env,
        construct_number,
        max(3, rounds // 10),
    )

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3)

    def gmean(*xs: float) -> float:
        return round(math.exp(sum(math.log(x) for x in xs) / len(xs)), 3)

    res: dict[str, Any] = {f"{k}_ns": round(v, 1) for k, v in {**fast, **slow}.items()}
    p_n = ratio(fast["fast_parse_normal"], fast["struct_parse_normal"])
    p_e = ratio(fast["fast_parse_transfer_event"], fast["struct_parse_transfer_event"])
    b_n = ratio(fast["fast_build_normal"], fast["struct_build_normal"])
    b_e = ratio(fast["fast_build_transfer_event"], fast["struct_build_transfer_event"])
    c_n = ratio(slow["construct_parse_normal"], fast["fast_parse_normal"])
    c_e = ratio(slow["construct_parse_transfer_event"], fast["fast_parse_transfer_event"])
    res.update(
        fast_over_struct_parse_normal=p_n,
        fast_over_struct_parse_transfer_event=p_e,
        fast_over_struct_build_normal=b_n,
        fast_over_struct_build_transfer_event=b_e,
        fast_over_struct_parse=gmean(p_n, p_e),
        fast_over_struct_build=gmean(b_n, b_e),
        construct_over_fast_parse_normal=c_n,
        construct_over_fast_parse_transfer_event=c_e,
        construct_over_fast_parse=gmean(c_n, c_e),
        construct_over_fast_build=ratio(slow["construct_build_normal"], fast["fast_build_normal"]),
    )

    # -- whole-ring scan: 4096 TRBs, producer one lap ahead up to index 3000 ------------------
    trbs = 4096
    flip_at = 3000
    ring = bytearray(trbs * TRB_SIZE)
    for i in range(trbs):
        NORMAL.pack_into(ring, i * TRB_SIZE, trb_transfer_length=i, C=1 if i < flip_at else 0)
    arr = trb_array(ring)
    if find_cycle_flip(arr, 1) != flip_at:
        raise AssertionError("cycle scan found the wrong flip")
    scan_number = 20 if quick else 100
    res["ring_scan_4096_us"] = round(
        _min_us(lambda: find_cycle_flip(arr, 1), scan_number, rounds), 2
    )
    view = memoryview(ring)

    def python_scan() -> int:
        for i in range(trbs):
            if cycle_of(view, i * TRB_SIZE) != 1:
                return i
        return -1

    res["ring_scan_4096_python_loop_us"] = round(_min_us(python_scan, 5 if quick else 20, 3), 1)
    res["ring_scan_numpy_version"] = np.__version__
    res["goal_fast_over_struct_max"] = 1.3
    res["goal_construct_over_fast_min"] = 40
    res["goal_ring_scan_4096_us_max"] = 100
    res["quick"] = quick
    return res
