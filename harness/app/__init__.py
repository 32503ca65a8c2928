"""dbc-harness: the application (CLI, sessions, console, transfer, views) above the benches."""
