"""``dbc-harness bench lab``: what running through a bench farm costs.

A loopback farm (:class:`~dbc_harness.fixtures.lab.loopback.LoopbackFarm`: a real labgrid
coordinator and exporter and an sshd on 127.0.0.1, the bench machine being this machine) serves
one virtual bench. The client side is labgrid itself (``labgrid-client reserve --wait`` and
``acquire``, then an ``Environment`` with ``RemotePlace``, ``SSHDriver``, ``DbcHarnessDriver``
and ``DbcStrategy``). Keys:

* ``reserve_to_run_s``: from ``reserve --wait`` to the first byte echoed through the farm
  (acquire, SSH connection, restore and version checks, the DbC brought up on the bench machine,
  one byte target -> host and back);
* ``reserve_s``: of that, the reservation and the acquire alone;
* ``farm_run_s`` / ``local_run_s``: the same ``dbc-harness run --json`` (echo sizes and
  throughput below) through the farm and as a local process, medians of ``runs`` interleaved
  rounds in this session;
* ``run_overhead_ratio``: ``farm_run_s / local_run_s`` (1.0 = the farm costs nothing);
* ``farm_first_progress_s``: from starting a farm run to its first progress line on the client;
* ``setup_s``: starting the coordinator, exporter and sshd (not part of the ratios).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import Any

from dbc_harness.fixtures.lab.errors import LabError

ECHO_SIZES = [1, 1024, 65536]
PLACE = "bench-lab"
TAG = "lab-benchmark"


def _local_run(harness: str, args: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    done = subprocess.run(
        [harness, "run", "--json", "--bench", "virtual", *args],
        capture_output=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - t0
    summary = json.loads(done.stdout or b"{}")
    if done.returncode != 0 or not summary.get("ok"):
        raise LabError(f"local dbc-harness run failed ({done.returncode}): {done.stderr[-300:]!r}")
    return seconds


def _transition(strategy: Any, state: str) -> None:
    """``strategy.transition(state)``; a failure names its cause (labgrid's StrategyError only
    says "broken state" and chains the cause)."""
    try:
        strategy.transition(state)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise LabError(f"bench state {state!r}: {type(cause).__name__}: {cause}") from exc


def run(quick: bool = False) -> dict[str, Any]:
    # deferred: labgrid (the [lab] extra) is optional; without it LabUnavailable says so
    import dbc_harness.fixtures.lab  # noqa: F401
    from dbc_harness.fixtures.lab.driver import run_arguments
    from dbc_harness.fixtures.lab.loopback import LoopbackFarm, parse_token
    from labgrid import Environment

    rounds = 1 if quick else 3
    options: dict[str, Any] = {"echo_sizes": ECHO_SIZES, "throughput_mib": 1 if quick else 8}
    t_setup = time.monotonic()
    with LoopbackFarm(("bench-1",)) as farm:
        setup_s = time.monotonic() - t_setup
        farm.create_place(PLACE, "bench-1", bench=TAG)
        t0 = time.monotonic()
        token = parse_token(farm.client("reserve", "--wait", "--shell", f"bench={TAG}"))
        farm.client("-p", "+", "acquire", token=token)
        reserve_s = time.monotonic() - t0
        env = Environment(str(farm.env_yaml(PLACE, farm.root / "env.yaml")))
        try:
            target = env.get_target()
            assert target is not None  # env_yaml writes the target "main"
            strategy = target.get_driver("DbcStrategy")
            harness = target.get_driver("DbcHarnessDriver")
            _transition(strategy, "configured")
            harness.session.write(b"\x5a")
            if harness.session.read_exact(1, timeout=10.0) != b"\x5a":
                raise LabError("the first byte came back different")
            reserve_to_run_s = time.monotonic() - t0
            _transition(strategy, "claimed")
            farm_s, local_s, first = [], [], []
            for _ in range(rounds):
                result = harness.run(**options)
                if not result.ok:
                    raise LabError(f"farm run failed: {result.summary}")
                farm_s.append(result.seconds)
                first.append(result.first_progress_s or result.seconds)
                local_s.append(_local_run(farm.harness, run_arguments(options), farm.env))
            _transition(strategy, "off")
        finally:
            env.cleanup()
            farm.client("cancel-reservation", token)
            farm.client("-p", PLACE, "release")
    farm_run = statistics.median(farm_s)
    local_run = statistics.median(local_s)
    return {
        "reserve_to_run_s": round(reserve_to_run_s, 3),
        "reserve_s": round(reserve_s, 3),
        "farm_run_s": round(farm_run, 3),
        "local_run_s": round(local_run, 3),
        "run_overhead_ratio": round(farm_run / local_run, 3),
        "farm_first_progress_s": round(statistics.median(first), 3),
        "setup_s": round(setup_s, 3),
        "runs": rounds,
        "echo_sizes": ECHO_SIZES,
        "throughput_mib": options["throughput_mib"],
        "baseline": "the same dbc-harness run --json as a local process, same session",
    }
