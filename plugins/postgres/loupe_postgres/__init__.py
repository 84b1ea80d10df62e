"""Loupe plant results store: PostgreSQL (psycopg 3)."""
