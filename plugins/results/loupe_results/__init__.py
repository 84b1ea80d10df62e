"""Loupe results analysis: summaries, exports and SPC over SQLite and PostgreSQL stores."""
