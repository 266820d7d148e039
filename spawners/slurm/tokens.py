"""Per-user tokens for slurmrestd, minted from the cluster's shared HS256 key.

Slurm's ``auth/jwt`` plugin (``AuthAltTypes=auth/jwt``, ``AuthAltParameters=jwt_key=FILE``)
accepts an HS256 JWT whose ``sun`` claim names the user and whose ``exp`` lies in the future;
``scontrol token username=U`` makes the same token. Whoever holds the key can act as any
user, so the key is read from a file (a mounted secret), never from the site file, and tokens
are short-lived and kept in memory only.
"""

from __future__ import annotations

import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt

# A cached token is replaced when less than this fraction of its lifetime is left.
RENEW_FRACTION = 0.5


class JwtKeyError(RuntimeError):
    """The JWT key file is missing, unreadable, empty or readable by others."""


def read_key(path: str | Path) -> bytes:
    """The key bytes of ``path``; refuses a key file that others may read."""
    path = Path(path)
    try:
        info = path.stat()
        key = path.read_bytes()
    except FileNotFoundError:
        raise JwtKeyError(
            f"The Slurm JWT key file {path} does not exist. Copy the cluster's key (the file "
            "slurm.conf names in AuthAltParameters=jwt_key=...) there, or set slurm.rest.key_file."
        ) from None
    except PermissionError:
        raise JwtKeyError(f"The hub may not read the Slurm JWT key file {path}.") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        # the target's mode (Kubernetes mounts secrets through symbolic links)
        raise JwtKeyError(
            f"The Slurm JWT key file {path} is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): whoever reads it can run jobs as any user. "
            "Make it 0400 or 0600."
        )
    if len(key.strip()) < 16:
        raise JwtKeyError(f"The Slurm JWT key file {path} holds no usable key (too short).")
    return key


def mint(key: bytes, username: str, lifetime: int, now: float | None = None) -> str:
    """A token that lets its bearer act as ``username`` for ``lifetime`` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {"sun": username, "iat": issued, "exp": issued + int(lifetime)}
    return jwt.encode(claims, key, algorithm="HS256")


@dataclass
class TokenCache:
    """Tokens per user, minted on demand and renewed at half their lifetime."""

    key_file: str
    lifetime: int = 600
    _key: bytes | None = None
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self) -> bytes:
        if self._key is None:
            self._key = read_key(self.key_file)
        return self._key

    def token(self, username: str) -> str:
        now = time.time()
        with self._lock:
            cached = self._tokens.get(username)
            if cached and cached[1] - now > self.lifetime * RENEW_FRACTION:
                return cached[0]
            token = mint(self.key(), username, self.lifetime, now)
            self._tokens[username] = (token, now + self.lifetime)
            return token
