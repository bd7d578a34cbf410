"""The social routes' empty answers (work in progress)."""
