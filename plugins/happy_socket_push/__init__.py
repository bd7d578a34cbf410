"""Push-token storage (work in progress)."""
