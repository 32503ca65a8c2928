"""Native faults become named errors with a place: function+offset, file.c:line, the faulting
address, the disassembled instruction and the last MMIO accesses; always within a deadline."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbc_harness.drivers.native import (
    DivisionByZero,
    Environment,
    IllegalInstruction,
    InvalidMemoryAccess,
    Machine,
    NativeFault,
    ReturnToNowhere,
    RunawayLoop,
    StackOverflow,
    VirtualTimeExhausted,
    WallTimeExhausted,
    bindings,
)
from dbc_harness.drivers.native.cc import compile_object

C = Path(__file__).parent / "native_c"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
ENV = Environment(functions=bindings.COMMON)


def line_of(marker: str) -> str:
    for n, text in enumerate((C / "faults.c").read_text().splitlines(), 1):
        if f"FAULT: {marker} " in text:
            return f"faults.c:{n}"
    raise AssertionError(marker)


@pytest.fixture(scope="module")
def obj() -> Path:
    return compile_object(C / "faults.c")


@pytest.fixture
def m(obj: Path) -> Iterator[Machine]:
    machine = Machine(obj, ENV, instructions=2_000_000, wall_time=10.0)
    yield machine
    machine.close()


def check_place(fault: NativeFault, function: str, marker: str) -> None:
    assert fault.location.startswith(f"{function}+0x"), fault.location
    assert fault.source == line_of(marker), str(fault)
    assert fault.instruction and "<" not in fault.instruction, fault.instruction
    text = str(fault)
    assert "\n" not in text and line_of(marker) in text and fault.location in text


def test_null_read(m: Machine) -> None:
    with pytest.raises(InvalidMemoryAccess) as info:
        m.call("null_read")
    f = info.value
    assert type(f) is InvalidMemoryAccess
    assert (f.address, f.access) == (0, "read")
    assert "NULL pointer" in str(f)
    check_place(f, "null_read", "null_read")


def test_write_to_read_only_code_is_a_protected_write(m: Machine) -> None:
    with pytest.raises(InvalidMemoryAccess) as info:
        m.call("null_write", m.symbol("null_read"))
    assert (info.value.access, info.value.address) == ("write", m.symbol("null_read"))
    assert "protected" in str(info.value)
    check_place(info.value, "null_write", "null_write")


def test_infinite_loop_is_a_runaway_loop_quickly(m: Machine) -> None:
    flag = m.alloc(4)
    started = time.monotonic()
    with pytest.raises(RunawayLoop) as info:
        m.call("forever", flag)
    assert time.monotonic() - started < 5
    check_place(info.value, "forever", "forever")
    assert info.value.budget == "instructions"
    m.write_u32(flag, 1)  # the machine is still usable after a fault
    assert m.call("forever", flag) == 0


def test_wall_clock_deadline(obj: Path) -> None:
    m = Machine(obj, ENV, instructions=10**12, wall_time=0.3)
    started = time.monotonic()
    with pytest.raises(WallTimeExhausted):
        m.call("forever", m.alloc(4))
    assert time.monotonic() - started < 5


def test_endless_recursion_is_a_stack_overflow(m: Machine) -> None:
    with pytest.raises(StackOverflow) as info:
        m.call("recurse", 0)
    f = info.value
    assert f.location.startswith("recurse+0x") and f.source is not None
    assert f.source.startswith("faults.c:")
    assert f.address is not None and f.address < m.stack_bottom
    assert isinstance(f, InvalidMemoryAccess)


def test_division_by_zero(m: Machine) -> None:
    assert m.call("divide", 7, 2) == 3
    with pytest.raises(DivisionByZero) as info:
        m.call("divide", 7, 0)
    check_place(info.value, "divide", "divide")
    assert "div" in info.value.instruction


def test_illegal_instruction(m: Machine) -> None:
    with pytest.raises(IllegalInstruction) as info:
        m.call("illegal")
    check_place(info.value, "illegal", "illegal")
    assert info.value.instruction == "ud2"


def test_call_through_a_bad_pointer_points_at_the_call(m: Machine) -> None:
    for target in (0, 0x1234_5678, m.symbol("table") if m.has_symbol("table") else 0x7100_0000):
        with pytest.raises(ReturnToNowhere) as info:
            m.call("call_pointer", target)
        f = info.value
        assert (f.address, f.access) == (target, "fetch")
        check_place(f, "call_pointer", "call_pointer")
        assert f.instruction.startswith("call") or f.instruction.startswith("jmp")


def test_smashed_return_address_names_the_function_that_returned(m: Machine) -> None:
    with pytest.raises(ReturnToNowhere) as info:
        m.call("smash_caller")
    f = info.value
    assert f.address == 0xDEAD0000
    assert f.location.startswith("smash+0x") and f.instruction == "ret"
    assert "was called from" in str(f) and line_of("smash_caller") in str(f)


def test_faults_carry_the_last_mmio_accesses() -> None:
    class Bar:
        def read32(self, off: int) -> int:
            return 0

        def write32(self, off: int, v: int) -> None: ...

        def read64(self, off: int) -> int:
            return 0

        def write64(self, off: int, v: int) -> None: ...

    src = "void f(volatile unsigned *bar) { bar[1] = 5; (void)bar[2]; *(volatile int *)0 = 1; }\n"
    m = Machine(compile_object(src, name="mmio_then_fault"), mmio=Bar())
    with pytest.raises(InvalidMemoryAccess) as info:
        m.call("f", m.bar_virt)
    assert [str(a) for a in info.value.mmio] == ["w32 BAR0+0x4 = 0x5", "r32 BAR0+0x8 = 0x0"]
    assert "w32 BAR0+0x4 = 0x5, r32 BAR0+0x8 = 0x0" in str(info.value)


def test_binding_exceptions_keep_their_type_and_gain_the_native_place(obj: Path) -> None:
    class Boom(RuntimeError):
        pass

    def printk(m: Machine, fmt: int, *_: int) -> int:
        raise Boom("model said no")

    m = Machine(obj, ENV.extended({"printk": printk}))
    with pytest.raises(Boom) as info:
        m.call("log_twice", 3)
    loc = info.value.native_location  # type: ignore[attr-defined]  # added by the runner
    assert loc.source == line_of("log_twice") and loc.function.startswith("log_twice+0x")
    assert any(line_of("log_twice") in n for n in info.value.__notes__)


def test_virtual_time_budget(obj: Path) -> None:
    src = "extern void udelay(unsigned long);\nvoid wait(void) { for (;;) udelay(1000); }\n"
    m = Machine(compile_object(src, name="delay_forever"), ENV, virtual_time=0.5)
    with pytest.raises(VirtualTimeExhausted) as info:
        m.call("wait")
    assert info.value.location.startswith("wait+0x") and info.value.source == "delay_forever.c:2"
    assert m.clock.monotonic() == pytest.approx(0.5, abs=0.002)
