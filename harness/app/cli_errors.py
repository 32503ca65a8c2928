"""The one place where every part's errors become one CLI line, a hint and an exit code.

Each part keeps one exception family (allocator ``DmaError``, drivers.dbc ``DbcError``, harness
``HarnessError``, fixtures.virtual ``VirtualXhciError``, fixtures.bench ``BenchError``,
fixtures.trace ``TraceError``). :func:`explain` walks the exception's class hierarchy and uses the
most specific entry of :data:`RULES`. Classes are matched by package and name, so this module
imports none of the parts (a part that is missing or broken cannot break error reporting).
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Exit codes of ``dbc-harness`` (documented in the README's troubleshooting section)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NO_DBC = 3
    PERMISSION = 4
    NO_IOMMU = 5
    BUSY = 6
    TIMEOUT = 7
    DEVICE_ERROR = 8
    NOT_FOUND = 9
    RESTORE_FAILED = 10
    CHECK_FAILED = 11
    INTERRUPTED = 130


@dataclass(frozen=True)
class Rule:
    package: str
    name: str
    code: ExitCode
    hint: str


@dataclass(frozen=True)
class Explained:
    message: str
    hint: str
    code: ExitCode


_NO_DBC_HINT = (
    "this controller has no Debug Capability (xHCI extended capability 0x0A); "
    "`dbc-harness list` shows which controllers have one"
)
_PERM_HINT = "run as root (sudo), or give your user the device nodes (README: bench machine)"

#: Most specific first is not required: the class hierarchy decides (nearest class wins).
RULES: tuple[Rule, ...] = (
    # harness (binding layer)
    Rule(
        "dbc_harness.harness", "HarnessError", ExitCode.FAILURE, "run with --debug for the details"
    ),
    Rule(
        "dbc_harness.harness", "BadAddress", ExitCode.USAGE, "PCI addresses look like 0000:00:14.0"
    ),
    Rule(
        "dbc_harness.harness",
        "DeviceNotFound",
        ExitCode.NOT_FOUND,
        "`dbc-harness list` shows the xHCI controllers of this machine",
    ),
    Rule("dbc_harness.harness", "NotPermitted", ExitCode.PERMISSION, _PERM_HINT),
    Rule(
        "dbc_harness.harness",
        "LockdownActive",
        ExitCode.PERMISSION,
        "kernel lockdown (Secure Boot) forbids resource0 mmap: use VFIO with the IOMMU on",
    ),
    Rule(
        "dbc_harness.harness",
        "NoIommu",
        ExitCode.NO_IOMMU,
        "enable VT-d/AMD-Vi in the BIOS and boot with intel_iommu=on (or amd_iommu=on); "
        "or --mode sysfs --unsafe (no DMA isolation)",
    ),
    Rule(
        "dbc_harness.harness",
        "RefusedClaim",
        ExitCode.BUSY,
        "nothing was changed; fix the reasons in the message, or pass --force at your own risk",
    ),
    Rule(
        "dbc_harness.harness",
        "UnsafeModeRefused",
        ExitCode.USAGE,
        "sysfs mode has no DMA isolation: pass --unsafe if you accept that",
    ),
    Rule(
        "dbc_harness.harness",
        "DeviceBusy",
        ExitCode.BUSY,
        "another dbc-harness holds it: wait for it, or run `dbc-harness restore` if it died",
    ),
    Rule(
        "dbc_harness.harness",
        "RestoreFailed",
        ExitCode.RESTORE_FAILED,
        "see the message for the commands to run by hand; `dbc-harness restore` retries",
    ),
    Rule("dbc_harness.harness", "NoDbc", ExitCode.NO_DBC, _NO_DBC_HINT),
    Rule(
        "dbc_harness.fixtures.trace",
        "TraceError",
        ExitCode.USAGE,
        "captures are .pcapng or .jsonl files",
    ),
    Rule(
        "dbc_harness.fixtures.virtual.quirk_options",
        "QuirkError",
        ExitCode.USAGE,
        "quirks are the fields of fixtures.virtual.Quirks: see `dbc-harness run --help`",
    ),
    Rule(
        "dbc_harness.fixtures.virtual.parts",
        "PartError",
        ExitCode.USAGE,
        "`dbc-harness list --parts` lists the named parts; --part is for the virtual bench",
    ),
    # the DbC driver
    Rule(
        "dbc_harness.drivers",
        "DbcError",
        ExitCode.FAILURE,
        "run with --debug, or record it with `trace`",
    ),
    Rule("dbc_harness.drivers", "DbcNotFound", ExitCode.NO_DBC, _NO_DBC_HINT),
    Rule(
        "dbc_harness.drivers",
        "DbcBusy",
        ExitCode.BUSY,
        "the DbC is already enabled (firmware or another driver): pass --takeover to take it over",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcTimeout",
        ExitCode.TIMEOUT,
        "is the debug cable in the debug port and the debug host up? (README: debug cable)",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcDisconnected",
        ExitCode.DEVICE_ERROR,
        "the debug host went away; check the cable and run again",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcSurpriseRemoval",
        ExitCode.DEVICE_ERROR,
        "the controller reads all-ones: it was removed or powered off",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcDeviceError",
        ExitCode.DEVICE_ERROR,
        "the controller handed back a bad value; record it with `dbc-harness trace`",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcUndelivered",
        ExitCode.DEVICE_ERROR,
        "the listed messages did not reach the debug host; nothing else was lost",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcConfigError",
        ExitCode.USAGE,
        "check the driver options and identity",
    ),
    # native C drivers under CPU emulation (drivers.native)
    Rule(
        "dbc_harness.drivers",
        "ElfLoadError",
        ExitCode.USAGE,
        "--driver takes an x86-64 ELF object (.o, static or shared), built as README's "
        "'Bring your own driver' shows",
    ),
    Rule(
        "dbc_harness.drivers",
        "CompileError",
        ExitCode.USAGE,
        "a driver .c is compiled freestanding with drivers/native/reference on the include path "
        "(dbc.h, dbc_env.h); --debug shows the compiler's messages",
    ),
    Rule(
        "dbc_harness.drivers",
        "UnboundSymbols",
        ExitCode.USAGE,
        "bind every listed symbol in your ENV.py (functions= / data=), or link it into the object",
    ),
    Rule(
        "dbc_harness.drivers",
        "UnknownSymbol",
        ExitCode.USAGE,
        "--entry names a function the object defines (`nm -g --defined-only OBJ` lists them)",
    ),
    Rule(
        "dbc_harness.drivers",
        "EnvironmentFileError",
        ExitCode.USAGE,
        "--env takes a Python file that defines ENV = Environment(...)",
    ),
    Rule(
        "dbc_harness.drivers",
        "BindingError",
        ExitCode.FAILURE,
        "a binding of the driver's kernel API refused the call: the message names it",
    ),
    Rule(
        "dbc_harness.drivers",
        "NativeFault",
        ExitCode.FAILURE,
        "the C driver faulted at the source line named (the last MMIO accesses are listed)",
    ),
    Rule(
        "dbc_harness.drivers",
        "BudgetExhausted",
        ExitCode.TIMEOUT,
        "the C driver did not return within its budget: a loop without a deadline, at the "
        "source line named",
    ),
    Rule(
        "dbc_harness.drivers",
        "DbcDmaError",
        ExitCode.FAILURE,
        "the DMA space ran out or refused; run with --debug for the allocator's reason",
    ),
    # the allocator
    Rule("dbc_harness.allocator", "DmaError", ExitCode.FAILURE, "run with --debug for the details"),
    Rule("dbc_harness.allocator", "PrivilegeRequired", ExitCode.PERMISSION, _PERM_HINT),
    Rule(
        "dbc_harness.allocator",
        "HugepagesUnavailable",
        ExitCode.PERMISSION,
        "reserve hugepages: echo 64 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
    ),
    Rule(
        "dbc_harness.allocator",
        "AddressLimitUnsatisfiable",
        ExitCode.FAILURE,
        "the controller needs DMA below 4 GiB (AC64 = 0): use VFIO so IOVAs can be chosen",
    ),
    Rule(
        "dbc_harness.allocator",
        "DmaFault",
        ExitCode.DEVICE_ERROR,
        "the device touched memory outside every buffer: a driver bug; record it with `trace`",
    ),
    Rule(
        "dbc_harness.allocator",
        "UseAfterFree",
        ExitCode.DEVICE_ERROR,
        "a DMA buffer was used after free() (written by the CPU through a stale view, or "
        "accessed by the device): a driver bug at the sites the message names",
    ),
    # the virtual controller
    Rule(
        "dbc_harness.fixtures",
        "VirtualXhciError",
        ExitCode.FAILURE,
        "run with --debug for the details",
    ),
    Rule(
        "dbc_harness.fixtures",
        "SpecViolation",
        ExitCode.DEVICE_ERROR,
        "the driver broke an xHCI rule; the finding names the rule and the spec section",
    ),
    Rule(
        "dbc_harness.fixtures",
        "DebugHostTimeout",
        ExitCode.TIMEOUT,
        "the target did not take or send the data in time: is its driver reading/writing?",
    ),
    Rule(
        "dbc_harness.fixtures",
        "HostStall",
        ExitCode.DEVICE_ERROR,
        "the endpoint is halted (STALL): the debug host must clear_halt() it",
    ),
    # benches
    Rule(
        "dbc_harness.fixtures", "BenchError", ExitCode.FAILURE, "run with --debug for the details"
    ),
    Rule(
        "dbc_harness.fixtures",
        "UnknownBench",
        ExitCode.USAGE,
        "benches are: virtual, qemu, hw:BDF (e.g. hw:0000:00:14.0)",
    ),
    Rule(
        "dbc_harness.fixtures",
        "BenchUnavailable",
        ExitCode.NOT_FOUND,
        "`dbc-harness list` shows what this machine offers; `--bench virtual` works anywhere",
    ),
    Rule(
        "dbc_harness.fixtures",
        "HostUnavailable",
        ExitCode.NOT_FOUND,
        "connect the debug cable to a debug host running dbc-harness, or use --bench virtual",
    ),
    Rule(
        "dbc_harness.fixtures",
        "DeviceNotEnumerated",
        ExitCode.TIMEOUT,
        "the driver never brought the DbC up to the host: the state lines above say how far it "
        "got; `dbc-harness trace` records every access",
    ),
    Rule(
        "dbc_harness.fixtures",
        "DeviceGone",
        ExitCode.DEVICE_ERROR,
        "the cable was pulled or the port/controller reset mid-transfer: plug it back, run again",
    ),
    Rule(
        "dbc_harness.fixtures",
        "PipeStalled",
        ExitCode.DEVICE_ERROR,
        "the DbC halted the endpoint (Babble/Transaction Error): record it with `trace`",
    ),
    Rule(
        "dbc_harness.fixtures",
        "KernelBenchError",
        ExitCode.FAILURE,
        "run with --debug for the guest console tail",
    ),
    Rule(
        "dbc_harness.fixtures",
        "KernelBenchUnavailable",
        ExitCode.NOT_FOUND,
        "install the kernel bench's Debian packages: bash .ci/setup",
    ),
    Rule(
        "dbc_harness.fixtures",
        "BootTimeout",
        ExitCode.TIMEOUT,
        "the QEMU guest did not boot in time (TCG is slow on a busy machine): run again",
    ),
    # USB/IP export (dbc_harness.fixtures.usbip)
    Rule(
        "dbc_harness.fixtures",
        "UsbipError",
        ExitCode.FAILURE,
        "`usbip list -r HOST` shows what the server exports; run with --debug for the details",
    ),
    Rule("dbc_harness.fixtures", "UsbipTimeout", ExitCode.TIMEOUT, "is the USB/IP peer up?"),
    Rule(
        "dbc_harness.harness.app",
        "RemoteExportRefused",
        ExitCode.FAILURE,
        "listen on loopback (--listen 127.0.0.1:3240), or add --allow-remote on a network you "
        "trust: anyone who reaches the port can attach the device",
    ),
    Rule(
        "dbc_harness.harness",
        "CheckFailed",
        ExitCode.CHECK_FAILED,
        "record the session with `trace`",
    ),
    Rule(
        "dbc_harness.harness",
        "TransferFailed",
        ExitCode.CHECK_FAILED,
        "the bytes differ: record the session with `dbc-harness trace`",
    ),
    # standard library / pyusb
    Rule("builtins", "PermissionError", ExitCode.PERMISSION, _PERM_HINT),
    Rule("builtins", "FileNotFoundError", ExitCode.NOT_FOUND, "check the path"),
    Rule("builtins", "IsADirectoryError", ExitCode.USAGE, "give a file, not a directory"),
    Rule("builtins", "TimeoutError", ExitCode.TIMEOUT, "is the other side up?"),
    Rule("builtins", "BrokenPipeError", ExitCode.FAILURE, "the program reading the output quit"),
    Rule(
        "builtins",
        "MemoryError",
        ExitCode.FAILURE,
        "not enough memory for that size: use smaller sizes",
    ),
    Rule(
        "socket",
        "gaierror",
        ExitCode.USAGE,
        "the host name does not resolve: give an IP address (e.g. 127.0.0.1)",
    ),
    Rule("usb", "NoBackendError", ExitCode.NOT_FOUND, "install libusb: apt install libusb-1.0-0"),
    Rule("usb", "USBError", ExitCode.DEVICE_ERROR, "check the debug cable and permissions"),
)

_BY_NAME: dict[str, list[Rule]] = {}
for _rule in RULES:
    _BY_NAME.setdefault(_rule.name, []).append(_rule)


def _rule_for(cls: type) -> Rule | None:
    module = cls.__module__ or ""
    for rule in _BY_NAME.get(cls.__name__, ()):
        if module == rule.package or module.startswith(rule.package + "."):
            return rule
    return None


#: operating-system errors the exception class alone does not tell apart (plain ``OSError``)
ERRNO_RULES: dict[int, tuple[ExitCode, str]] = {
    errno.ENOSPC: (ExitCode.FAILURE, "the file system (or device) is full: write elsewhere"),
    errno.EFBIG: (ExitCode.FAILURE, "the file grew beyond what its file system allows"),
    errno.EROFS: (ExitCode.USAGE, "that file system is read-only: write elsewhere"),
    errno.EIO: (ExitCode.FAILURE, "the file or device failed the I/O: give a regular file"),
    errno.ENAMETOOLONG: (ExitCode.USAGE, "shorten the path"),
    errno.EADDRINUSE: (
        ExitCode.BUSY,
        "another program listens there: pick another --listen port (port 0: any free one)",
    ),
    errno.EACCES: (
        ExitCode.PERMISSION,
        "not permitted: ports below 1024 and device nodes need root (README: bench machine)",
    ),
    errno.EADDRNOTAVAIL: (
        ExitCode.USAGE,
        "that is not an address of this machine: use 127.0.0.1, or one `ip addr` lists",
    ),
}
_OS_HINT = "an operating-system call failed on the file or device named: check it"

#: the catch-all class of each part's family: their hint is generic
_FAMILY_ROOTS = frozenset(
    {"HarnessError", "DbcError", "DmaError", "VirtualXhciError", "BenchError", "UsbipError",
     "KernelBenchError", "TraceError"}
)  # fmt: skip

#: click's usage errors (exit 2), matched by name like the parts' errors
_CLICK_USAGE = frozenset(
    {"UsageError", "BadParameter", "MissingParameter", "NoSuchOption", "BadOptionUsage",
     "BadArgumentUsage", "NoArgsIsHelpError"}
)  # fmt: skip


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _explain_click(exc: BaseException) -> Explained | None:
    """click's own errors: the same one line and hint, the usage line where it helps."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("click")}
    if "ClickException" not in names:
        return None
    format_message = getattr(exc, "format_message", None)
    message = _one_line(format_message() if callable(format_message) else str(exc))
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or getattr(exc, "command_path", "dbc-harness")
    if not names & _CLICK_USAGE:
        code = getattr(exc, "exit_code", 1)
        return Explained(
            message or type(exc).__name__,
            "check the file named",
            ExitCode(code) if code in ExitCode._value2member_map_ else ExitCode.FAILURE,
        )
    code = ExitCode.USAGE
    command = getattr(ctx, "command", None)
    if "NoArgsIsHelpError" in names:  # the help was printed on stdout before this line
        return Explained(
            "no command given", f"pick one of the commands above: `{path} COMMAND --help`", code
        )
    if message.startswith("No such command"):
        hint = f"`{path} --help` lists the commands"
    elif "NoSuchOption" in names or "BadOptionUsage" in names:
        hint = f"`{path} --help` lists its options"
    elif "BadParameter" in names and "MissingParameter" not in names:
        hint = f"`{path} --help` describes each option and the values it takes"
    elif command is not None:
        pieces = " ".join(command.collect_usage_pieces(ctx))
        hint = f"usage: {path} {pieces}; `{path} --help` for more"
    else:
        hint = f"`{path} --help` for the usage"
    return Explained(message, hint, code)


def _explain_os_error(exc: OSError) -> Explained | None:
    if exc.errno is None or not exc.strerror:
        return None
    code, hint = ERRNO_RULES.get(exc.errno, (ExitCode.FAILURE, _OS_HINT))
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return Explained(f"{where}{exc.strerror} ({name})", hint, code)


def explain(exc: BaseException) -> Explained:
    """One line, one hint and an exit code for any exception (nearest matching class wins)."""
    clicked = _explain_click(exc)
    if clicked is not None:
        return clicked
    rule = None
    for cls in type(exc).__mro__:
        rule = _rule_for(cls)
        if rule is not None:
            break
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    reasons = getattr(exc, "reasons", None)
    if isinstance(reasons, list | tuple) and len(reasons) > 1:
        message += " (" + "; ".join(str(r) for r in reasons) + ")"
    cause = exc.__cause__
    if isinstance(cause, OSError) and (rule is None or rule.name in _FAMILY_ROOTS):
        # a family's catch-all wrapping an OS error (e.g. a bind's EADDRINUSE or a host name
        # that does not resolve): the OS error's own hint says more
        by_cause = explain(cause)
        if "bug" not in by_cause.hint and by_cause.hint != _OS_HINT:
            return Explained(message, by_cause.hint, by_cause.code)
    if rule is None and isinstance(exc, OSError):
        explained_os = _explain_os_error(exc)
        if explained_os is not None:
            return explained_os
    if rule is None:
        return Explained(
            f"{type(exc).__name__}: {message}",
            "this is a bug in dbc-harness: run with --debug and report the traceback",
            ExitCode.FAILURE,
        )
    return Explained(message, rule.hint, rule.code)
