"""dbc-harness: harness."""
