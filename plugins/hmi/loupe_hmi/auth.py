"""Who may do what on the operator screen: users and tokens from the station's secrets file.

The secrets file (YAML, written by ``loupe hmi user`` / ``loupe hmi token``) holds only hashes::

    users:
      alice: {role: engineer, password: "scrypt$16384$8$1$<salt hex>$<hash hex>"}
    tokens:
      dashboard: {role: operator, sha256: "<hex of the token>"}

Roles: ``operator`` may trigger, acknowledge and reset the counters; ``engineer`` may
also change job, reset the station and reload the recipes. Without a login, the
screen is read-only, and only when the station allows a public view.

Browsers log in with a password and get a session cookie (``HttpOnly``,
``SameSite=Strict``) plus a CSRF token that every action must echo in the
``X-CSRF-Token`` header; programs send ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from host import UsageError

ROLES = ("operator", "engineer")
RANK = {"viewer": 0, "operator": 1, "engineer": 2}
_N, _R, _P = 2 ** 14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_secrets(path: Path | None) -> dict[str, Any]:
    """The secrets file as {users: {...}, tokens: {...}}; a missing path means no logins at all."""
    if path is None or not path.exists():
        return {"users": {}, "tokens": {}}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the secrets file: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a secrets file is a mapping with 'users' and 'tokens'")
    out: dict[str, Any] = {"users": {}, "tokens": {}}
    for section, key in (("users", "password"), ("tokens", "sha256")):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise UsageError(f"{path}: {section}: expected a mapping of names")
        for name, entry in entries.items():
            if not isinstance(entry, dict) or entry.get("role") not in ROLES or not isinstance(entry.get(key), str):
                raise UsageError(f"{path}: {section}.{name}: needs role ({' or '.join(ROLES)}) and {key}")
            out[section][str(name)] = {"role": entry["role"], key: entry[key]}
    return out


def write_secrets(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float


class Auth:
    """Password check, tokens, and server-side sessions (nothing secret lives in the cookie but its id)."""

    def __init__(self, secrets_file: Path | None, public_view: bool, session_s: float = 12 * 3600):
        self.file = secrets_file
        self.public_view = public_view
        self.session_s = session_s
        self._data = read_secrets(secrets_file)
        self._tokens = {v["sha256"]: (k, v["role"]) for k, v in self._data["tokens"].items()}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, user: str, password: str) -> tuple[str, Session] | None:
        entry = self._data["users"].get(user)
        if entry is None:
            check_password(password, hash_password("x"))  # same work either way: no user enumeration by timing
            return None
        if not check_password(password, entry["password"]):
            return None
        sid = secrets.token_urlsafe(32)
        s = Session(user, entry["role"], secrets.token_urlsafe(24), time.time() + self.session_s)
        with self._lock:
            self._sessions[sid] = s
        return sid, s

    def logout(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is not None and s.expires < time.time():
                del self._sessions[sid]
                s = None
        return s

    def bearer(self, token: str | None) -> tuple[str, str] | None:
        if not token:
            return None
        return self._tokens.get(token_hash(token))
