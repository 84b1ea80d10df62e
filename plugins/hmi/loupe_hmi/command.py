"""``loupe hmi user|token``: add operator-screen logins to a station's secrets file (hashes only)."""
from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from host import Command, UsageError

from .auth import ROLES, hash_password, read_secrets, token_hash, write_secrets


class HmiCommand(Command):
    name = "hmi"
    help = "operator screen: add users (password) and tokens (programs) to a station's secrets file"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="hmi_command", metavar="ACTION")
        sub.required = True
        u = sub.add_parser("user", help="add or change a user (the password is read from the terminal or stdin)")
        u.add_argument("secrets", metavar="SECRETS", help="the station's secrets file (created 0600 if missing)")
        u.add_argument("name")
        u.add_argument("--role", choices=ROLES, required=True)
        u.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
        t = sub.add_parser("token", help="make a bearer token for a program; printed once, stored hashed")
        t.add_argument("secrets", metavar="SECRETS")
        t.add_argument("name")
        t.add_argument("--role", choices=ROLES, required=True)
        r = sub.add_parser("remove", help="remove a user or a token")
        r.add_argument("secrets", metavar="SECRETS")
        r.add_argument("name")

    def run(self, args: argparse.Namespace) -> int:
        path = Path(args.secrets)
        data = read_secrets(path)
        if args.hmi_command == "user":
            if args.password_stdin or not sys.stdin.isatty():
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if password != getpass.getpass("again: "):
                    raise UsageError("the passwords differ")
            if len(password) < 8:
                raise UsageError("a password has at least 8 characters")
            data["users"][args.name] = {"role": args.role, "password": hash_password(password)}
            write_secrets(path, data)
            print(f"user {args.name} ({args.role}) saved in {path}")
        elif args.hmi_command == "token":
            token = secrets.token_urlsafe(32)
            data["tokens"][args.name] = {"role": args.role, "sha256": token_hash(token)}
            write_secrets(path, data)
            print(token)
            print(f"token {args.name} ({args.role}) saved in {path}; it is shown only now", file=sys.stderr)
        else:
            found = data["users"].pop(args.name, None) or data["tokens"].pop(args.name, None)
            if found is None:
                raise UsageError(f"{path}: no user or token {args.name!r}")
            write_secrets(path, data)
            print(f"removed {args.name} from {path}")
        return 0
