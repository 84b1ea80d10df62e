"""Tools for the host's own tests: a slow step and a step that fails on demand."""
