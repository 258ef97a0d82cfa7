"""Operators of the Configuration Center, each signed in by a token of their own (the audit names who changed what).

    hermes ui-operator add ana        prints ana's new token once (only its SHA-256 is kept)
    hermes ui-operator remove ana     her token stops working at once (sessions included)
    hermes ui-operator list

Kept in `$HERMES_HOME/secrets/ui_operators.json` (mode 600). The deployment's own `HERMES_UI_TOKEN` still signs in,
as the operator `admin` (the first sign-in of a fresh deployment, and scripts); nobody types a name any more.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from pathlib import Path

NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,39}$")
ADMIN = "admin"


def path(home: Path) -> Path:
    return Path(home) / "secrets" / "ui_operators.json"


def _read(home: Path) -> dict:
    p = path(home)
    return json.loads(p.read_text()) if p.exists() else {}


def _write(home: Path, doc: dict) -> None:
    p = path(home)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
    os.replace(tmp, p)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(home: Path, name: str) -> str:
    """A new token for `name` (replacing any earlier one); returned once, never stored."""
    if not NAME.match(name) or name == ADMIN:
        raise ValueError(f"{name!r}: an operator name is 2-40 characters of a-z, 0-9, _ . - starting with a letter "
                         f"(and not {ADMIN!r})")
    token = secrets.token_urlsafe(24)
    doc = _read(home)
    doc[name] = {"sha256": _digest(token), "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write(home, doc)
    return token


def remove(home: Path, name: str) -> None:
    doc = _read(home)
    if name not in doc:
        raise KeyError(f"no operator {name!r}; operators: {sorted(doc)}")
    del doc[name]
    _write(home, doc)


def names(home: Path) -> list[str]:
    return sorted(_read(home))


def who(home: Path, token: str, shared: str) -> str | None:
    """The operator a token names (None: no one)."""
    if not token:
        return None
    digest = _digest(token)
    for name, entry in _read(home).items():
        if hmac.compare_digest(entry["sha256"], digest):
            return name
    return ADMIN if shared and hmac.compare_digest(token, shared) else None


def active(home: Path, name: str) -> bool:
    """Still an operator (a removed one's sessions end at once)."""
    return name == ADMIN or name in _read(home)
