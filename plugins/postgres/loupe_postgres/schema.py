"""The PostgreSQL results schema, its forward migrations, and opening a connection from a spec.

Spec: ``postgresql://USER@HOST:PORT/DB[?station=NAME&migrate=1&retry_s=60&...]``. The password never
goes in the spec (it would be stored with every run): libpq reads it from ``PGPASSWORD``, ``~/.pgpass``
(or ``PGPASSFILE``), or a service file. Other query parameters (``sslmode=...``) go to libpq as they are.

Schema versions (``loupe_schema`` holds one row per applied version):

1. ``runs``, ``frames`` (one row per frame, the full result as JSONB, images by path), ``results``
   (one row per step and frame).
2. ``measurements``: one row per numeric measurement (frame, step, name, value, limit, verdict) so that
   SPC is plain SQL; back-filled from ``results`` for stores written at version 1.

A new, empty database gets the newest schema when a reporter opens it. An older schema is migrated
by ``loupe results migrate STORE``, or at open when the spec says ``migrate=1`` (or
``LOUPE_PG_MIGRATE=1``); otherwise opening it fails with a message that says so. Migrations hold an
advisory lock, so several stations opening a fresh database at once create it once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from host import UsageError

#: ``pg_advisory_xact_lock`` key held while the schema is created or migrated.
LOCK_KEY = 0x6C6F757065  # "loupe"

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "runs, frames (full result as JSONB), results", """
CREATE TABLE runs(
    run_id text PRIMARY KEY, station text NOT NULL, recipe_name text, recipe_hash text NOT NULL,
    recipe jsonb, source text, started timestamptz, ended timestamptz, plugins jsonb, counts jsonb);
CREATE TABLE frames(
    id bigserial PRIMARY KEY, run_id text NOT NULL REFERENCES runs(run_id), station text NOT NULL,
    recipe_hash text NOT NULL, key text NOT NULL, idx integer, path text, source text, ts timestamptz,
    verdict text NOT NULL, error text, total_ms double precision, timings jsonb, result jsonb,
    UNIQUE(run_id, key));
CREATE TABLE results(
    frame_id bigint NOT NULL REFERENCES frames(id) ON DELETE CASCADE, step text NOT NULL,
    tool text NOT NULL, verdict text NOT NULL, measurements jsonb, failures jsonb, error text,
    ms double precision);
CREATE INDEX results_frame ON results(frame_id);
CREATE INDEX frames_run_verdict ON frames(run_id, verdict);
CREATE INDEX frames_ts ON frames(ts);
CREATE INDEX runs_resume ON runs(recipe_hash, source, station, started);
"""),
    (2, "measurements: one row per numeric measurement, for plain-SQL SPC", """
CREATE TABLE measurements(
    frame_id bigint NOT NULL REFERENCES frames(id) ON DELETE CASCADE, run_id text NOT NULL,
    station text NOT NULL, ts timestamptz, step text NOT NULL, name text NOT NULL,
    value double precision, lo double precision, hi double precision, verdict text);
INSERT INTO measurements(frame_id, run_id, station, ts, step, name, value, lo, hi, verdict)
SELECT f.id, f.run_id, f.station, f.ts, r.step, m.key, (m.value #>> '{}')::double precision,
       (st.s -> 'limits' -> m.key ->> 'min')::double precision,
       (st.s -> 'limits' -> m.key ->> 'max')::double precision,
       COALESCE((SELECT split_part(t, ' ', -1) FROM jsonb_array_elements_text(COALESCE(r.failures, '[]'))
                 AS t WHERE t LIKE m.key || '=%' LIMIT 1),
                CASE WHEN st.s -> 'limits' ? m.key THEN 'pass' END)
FROM results r
JOIN frames f ON f.id = r.frame_id
JOIN runs ru ON ru.run_id = f.run_id
CROSS JOIN LATERAL jsonb_each(COALESCE(r.measurements, '{}')) AS m
LEFT JOIN LATERAL (SELECT e AS s FROM jsonb_array_elements(COALESCE(ru.recipe -> 'inspect', '[]')) AS e
                   WHERE e ->> 'name' = r.step LIMIT 1) AS st ON true
WHERE jsonb_typeof(m.value) = 'number';
CREATE INDEX measurements_step_name ON measurements(name, step, ts);
CREATE INDEX measurements_frame ON measurements(frame_id);
CREATE INDEX frames_station_ts ON frames(station, ts);
"""),
]
LATEST = MIGRATIONS[-1][0]

_OWN_PARAMS = ("station", "migrate", "retry_s", "batch", "queue")


@dataclass
class PgSpec:
    """A parsed ``postgresql://`` spec: the libpq conninfo (no password) and Loupe's own options."""

    conninfo: str
    shown: str  # for messages
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(target: str, scheme: str = "postgresql") -> PgSpec:
    """Parse the part after ``postgresql:`` (``//USER@HOST:PORT/DB?...``) or a whole URL."""
    t = target.strip()
    for prefix in ("postgresql:", "postgres:"):
        if t.lower().startswith(prefix):
            t = t[len(prefix):]
    url = "postgresql://" + t.lstrip("/")
    shown = f"{scheme}://{t.lstrip('/')}"
    try:
        parts = urlsplit(url)
        password = parts.password
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise UsageError(f"report {shown!r}: {exc} (expected postgresql://USER@HOST:PORT/DB)") from None
    if password is not None:
        safe = shown.replace(f":{password}@", ":***@")
        raise UsageError(f"report {safe!r}: do not put the password in the spec (it is stored with every run); "
                         f"set PGPASSWORD or use ~/.pgpass")
    if not host or not parts.path.strip("/"):
        raise UsageError(f"report {shown!r}: expected postgresql://USER@HOST:PORT/DB")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OWN_PARAMS]
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    shown = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    return PgSpec(conninfo, shown, own)


def connect(spec: PgSpec, *, autocommit: bool = False, timeout: float = 5.0):
    """Open a connection; a failure is a ``UsageError`` with one clear line (the CLI exits 2)."""
    import psycopg

    try:
        return psycopg.connect(spec.conninfo, autocommit=autocommit, connect_timeout=max(1, int(timeout)),
                               application_name="loupe")
    except psycopg.OperationalError as exc:
        msg = " ".join(str(exc).split())
        hint = ""
        if "password" in msg:
            hint = " (the password comes from PGPASSWORD or ~/.pgpass, never from the spec)"
        raise UsageError(f"{spec.shown}: cannot connect: {msg}{hint}") from None


def current_version(conn) -> int:
    """The schema version of the database (0 when it has no Loupe tables)."""
    with conn.cursor() as cur:
        # a plain catalogue query (not to_regclass, whose cache may miss a table that another session
        # committed while this one waited for the migration lock)
        cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relname IN ('loupe_schema', 'frames')")
        have = {r[0] for r in cur.fetchall()}
        if "loupe_schema" not in have:
            if "frames" in have:
                raise UsageError("the database has a 'frames' table but no 'loupe_schema': not a Loupe store")
            return 0
        cur.execute("SELECT COALESCE(MAX(version), 0) FROM loupe_schema")
        return int(cur.fetchone()[0])


def migrate(conn, to: int | None = None) -> list[int]:
    """Apply the forward migrations up to ``to`` (default: the newest); return the versions applied.

    Runs in one transaction under an advisory lock; the caller's connection must not be in autocommit.
    """
    to = LATEST if to is None else to
    if not 1 <= to <= LATEST:
        raise UsageError(f"schema version {to} does not exist (1..{LATEST})")
    applied: list[int] = []
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            have = current_version(conn)
            if have > LATEST:
                raise UsageError(f"the database schema is version {have}, newer than this loupe-postgres "
                                 f"knows ({LATEST}): upgrade loupe-postgres")
            if have == 0:
                cur.execute("CREATE TABLE loupe_schema(version integer PRIMARY KEY, "
                            "applied timestamptz NOT NULL DEFAULT now(), note text)")
            for version, note, sql in MIGRATIONS:
                if have < version <= to:
                    cur.execute(sql)
                    cur.execute("INSERT INTO loupe_schema(version, note) VALUES (%s, %s)", (version, note))
                    applied.append(version)
    return applied


def ensure_schema(conn, spec: PgSpec) -> None:
    """At open: create the newest schema in an empty database, or migrate when the user allows it."""
    have = current_version(conn)
    conn.rollback()
    if have == LATEST:
        return
    allowed = spec.options.get("migrate", os.environ.get("LOUPE_PG_MIGRATE", "")).lower() in ("1", "true", "yes")
    if have == 0 or allowed:
        migrate(conn)
        return
    if have > LATEST:
        raise UsageError(f"{spec.shown}: the database schema is version {have}, newer than this loupe-postgres "
                         f"knows ({LATEST}): upgrade loupe-postgres")
    raise UsageError(f"{spec.shown}: the database schema is version {have}, this loupe-postgres writes version "
                     f"{LATEST}: run 'loupe results migrate {spec.shown}' (or add ?migrate=1 to the spec)")
