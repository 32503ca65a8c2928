"""Claim a controller, run a No Op through it, say CLAIMED, then wait to be signalled or killed.

Used by test_restore.py: ``python claim_holder.py BDF MODE``. Exit codes: 0 after a normal exit
(stdin closed), 130 after SIGINT (KeyboardInterrupt), 143 after SIGTERM and 129 after SIGHUP
(SystemExit from the claim's handler). Waits at most 120 s.
"""

from __future__ import annotations

import select
import sys

from dbc_harness.drivers.xhci.host import XhciHost
from dbc_harness.harness.binding.claim import claim


def main() -> int:
    bdf, mode = sys.argv[1], sys.argv[2]
    try:
        with claim(bdf, mode, unsafe=(mode == "sysfs")) as c, XhciHost(c.mmio, c.dma) as host:
            event = host.no_op()
            print(f"CLAIMED {c.info.mode} cc={event.completion_code}", flush=True)
            select.select([sys.stdin], [], [], 120.0)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
