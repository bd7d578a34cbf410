"""Per-user key-value store over HTTP (work in progress)."""
