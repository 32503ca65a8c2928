"""The Python DbC driver."""
