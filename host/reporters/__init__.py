"""The host's built-in reporters (jsonl, csv, sqlite, html), registered as a plugin."""
