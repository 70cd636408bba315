"""Device identities: bearer tokens issued per device, stored only as hashes.

A token is 32 random bytes (``fdg_`` + URL-safe base64). Because it is random, a single
SHA-256 is enough to store it safely: there is nothing to brute-force that a slow
password hash would protect. The table lives in the state directory's SQLite database,
so ``fedge tokens create|revoke`` in another process takes effect on the running
server at the next request, and tokens survive a server restart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedge.errors import FedgeError
from fedge.refusals import Unauthenticated, quote
from fedge.server.state_db import open_db

PREFIX = "fdg_"
# Matched whole (fullmatch): "$" would also admit a trailing newline.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    device_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL,
    role TEXT NOT NULL DEFAULT 'device'
);
"""
ROLES = ("device", "operator")


@dataclass(frozen=True)
class TokenInfo:
    """What ``fedge tokens list`` shows about a device's token (never the token)."""

    device_id: str
    created_at: float
    revoked_at: float | None
    role: str = "device"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_device_id(device_id: str) -> str:
    """Returns device_id if it is a usable identity, else raises FedgeError."""
    if not DEVICE_ID.fullmatch(device_id):
        raise FedgeError(f"device id {quote(device_id)} must be 1-128 characters of letters, "
                         "digits and . _ : @ -, starting with a letter or digit")
    return device_id


class TokenStore:
    """The tokens table of a state directory's database."""

    def __init__(self, state_dir: str | Path) -> None:
        root = Path(state_dir)
        self._lock = threading.Lock()
        # WAL lets `fedge tokens` write while a running server reads.
        self._db = open_db(root, ("PRAGMA journal_mode=WAL",), SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tokens)")}
        if "role" not in columns:  # a state dir from before operator tokens
            with self._db:
                self._db.execute("ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL "
                                 "DEFAULT 'device'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, device_id: str, role: str = "device") -> str:
        """Issues a new token for device_id, replacing (and so revoking) any earlier one.

        role: "device" (joins and trains) or "operator" (reads the server's status).
        Returns the token; it cannot be recovered later.
        """
        check_device_id(device_id)
        if role not in ROLES:
            raise FedgeError(f"role must be one of {ROLES}, got {role!r}")
        token = PREFIX + secrets.token_urlsafe(32)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO tokens(device_id, token_hash, created_at, revoked_at, role) "
                "VALUES (?, ?, ?, NULL, ?) ON CONFLICT(device_id) DO UPDATE SET "
                "token_hash = excluded.token_hash, created_at = excluded.created_at, "
                "revoked_at = NULL, role = excluded.role",
                (device_id, hash_token(token), time.time(), role))
        return token

    def create_many(self, device_ids: list[str]) -> list[str]:
        """create() for many devices in one transaction (one fsync, not one each: a
        thousand simulated devices enrol in milliseconds instead of seconds)."""
        for device_id in device_ids:
            check_device_id(device_id)
        tokens = [PREFIX + secrets.token_urlsafe(32) for _ in device_ids]
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO tokens(device_id, token_hash, created_at, revoked_at, role) "
                "VALUES (?, ?, ?, NULL, 'device') ON CONFLICT(device_id) DO UPDATE SET "
                "token_hash = excluded.token_hash, created_at = excluded.created_at, "
                "revoked_at = NULL, role = excluded.role",
                [(d, hash_token(t), now) for d, t in zip(device_ids, tokens, strict=True)])
        return tokens

    def revoke(self, device_id: str) -> None:
        """Revokes device_id's token; its next request is refused."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                (time.time(), device_id))
        if cursor.rowcount == 0:
            raise FedgeError(f"device {device_id!r} has no active token")

    def list(self) -> list[TokenInfo]:
        """Every device that has had a token, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT device_id, created_at, revoked_at, role FROM "
                                    "tokens ORDER BY created_at").fetchall()
        return [TokenInfo(*row) for row in rows]

    def identify(self, token: str) -> tuple[str, str]:
        """The (name, role) a token belongs to; Unauthenticated if unknown or revoked."""
        if not token.startswith(PREFIX):
            raise Unauthenticated("the token is not a fedge device token (fdg_...)")
        digest = hash_token(token)
        with self._lock:
            row = self._db.execute("SELECT device_id, token_hash, revoked_at, role FROM "
                                   "tokens WHERE token_hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[1], digest):
            raise Unauthenticated("unknown device token; create one with `fedge tokens create`")
        if row[2] is not None:
            raise Unauthenticated(f"the token of device {row[0]!r} was revoked")
        return str(row[0]), str(row[3])
