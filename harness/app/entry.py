"""The ``dbc-harness`` entry point: signal handlers first, then everything else.

Installed before click, rich or any part is imported, so SIGINT, SIGTERM or SIGHUP at any moment
of start-up already end as documented (one line, exit 130 / 143 / 129; :mod:`.cli_signals`).
"""

from __future__ import annotations

import sys

from dbc_harness.harness.app import cli_signals


def main() -> None:
    cli_signals.install()
    cli_signals.tolerate_encoding()
    try:
        # deferred: click, rich and the parts load only once the handlers are in place
        from dbc_harness.harness.app.cli import main as cli_main
    except cli_signals.Interrupted as exc:
        cli_signals.hold()
        sys.stderr.write(f"interrupted by {exc.name} while starting: nothing was taken\n")
        sys.exit(exc.exit_code)
    cli_main()


if __name__ == "__main__":
    main()
