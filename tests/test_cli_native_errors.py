"""`dbc-harness run --driver`: a bad object, environment, entry or source, a C driver that faults,
and one that claims success the controller contradicts, each end as one error line + hint with
a documented exit code (never 'this is a bug', never a PASS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dbc_harness.fixtures.bench import DeviceNotEnumerated, VirtualBench

#: the data-path ABI with a NULL dereference in dbc_init (line 6) / an init that lies
ABI_REST = """
int dbc_poll(void) { return 0; }
long dbc_write(const void *buf, unsigned long len) { (void)buf; return (long)len; }
long dbc_read(void *buf, unsigned long max) { (void)buf; (void)max; return 0; }
int dbc_state(void) { return 0; }
unsigned long dbc_out_pending(void) { return 0; }
int dbc_stop(void) { return 0; }
int dbc_pci_scan(void) { return 0; }
"""
NULL_INIT = """#include "dbc.h"
int dbc_init(unsigned long long bar0_phys, unsigned int flags, unsigned long wait_us)
{
	volatile unsigned int *p = (volatile unsigned int *)0;
	(void)bar0_phys; (void)flags; (void)wait_us;
	return (int)*p;
}
"""
LYING_INIT = """#include "dbc.h"
int dbc_init(unsigned long long bar0_phys, unsigned int flags, unsigned long wait_us)
{
	(void)bar0_phys; (void)flags; (void)wait_us;
	return 0;
}
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dbc_harness.harness.app.entry", "run", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _lines(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert "Traceback" not in result.stderr + result.stdout
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    hints = [ln for ln in result.stderr.splitlines() if ln.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert "this is a bug" not in hints[0]
    return errors[0], hints[0]


@pytest.mark.parametrize(
    ("make_args", "code", "message", "hint"),
    [
        (lambda d: ["--driver", "/etc/passwd"], 2, "not an x86-64 ELF64 object", "ELF object"),
        (lambda d: ["--driver", str(d / "none.o")], 2, "no such file", ""),
        (lambda d: ["--driver", "reference", "--env", "/etc/passwd"], 2, "not importable", "ENV"),
        (lambda d: ["--driver", "reference", "--entry", "nosuch"], 2, "'nosuch'", "nm -g"),
        (lambda d: ["--driver", str(d / "broken.c")], 2, "gcc failed on broken.c: ", "dbc.h"),
        (lambda d: ["--driver", str(d / "null.c")], 1, "(null.c:6)", "source line"),
        (lambda d: ["--driver", str(d / "lying.c")], 7, "returned 0 but the driver reports", ""),
    ],
    ids=["not-elf", "missing", "bad-env", "no-entry", "compile-error", "null-deref", "lying"],
)
def test_native_driver_failures_are_one_line_with_their_exit_code(
    tmp_path: Path, make_args: object, code: int, message: str, hint: str
) -> None:
    (tmp_path / "broken.c").write_text('#include "dbc.h"\nint dbc_init(void) { return }\n')
    (tmp_path / "null.c").write_text(NULL_INIT + ABI_REST)
    (tmp_path / "lying.c").write_text(LYING_INIT + ABI_REST)
    assert callable(make_args)
    result = _run(*make_args(tmp_path), "--timeout", "2")
    error, hint_line = _lines(result)
    assert result.returncode == code, result.stderr
    assert message in error
    assert hint in hint_line
    assert "PASS" not in result.stdout


def test_virtual_debug_host_that_never_sees_the_dbc_is_a_failure_not_a_skip() -> None:
    # the virtual host is always attached: no enumeration means the target failed
    with VirtualBench() as bench, pytest.raises(DeviceNotEnumerated):
        bench.debug_device(timeout=0.2)
