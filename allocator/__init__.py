"""dbc-harness: allocator."""
