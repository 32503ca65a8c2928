"""dbc-harness: drivers."""
