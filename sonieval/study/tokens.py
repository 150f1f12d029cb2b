"""Rater and admin tokens: unguessable, stored only as hashes.

A token is ``secrets.token_urlsafe(32)`` (256 random bits). The database keeps its SHA-256,
so a copy of the database does not give anyone a working link. A plain (unsalted, fast) hash
is enough here because the token itself carries 256 bits of entropy: there is nothing to
brute-force, unlike a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN_BYTES = 32
# What token_urlsafe produces: base64url without padding. Anything else is refused before
# it reaches the database.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(value: object) -> bool:
    return isinstance(value, str) and bool(_TOKEN_RE.match(value))


def token_matches(token: object, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented token with a stored hash."""
    if not stored_hash or not looks_like_token(token):
        return False
    return hmac.compare_digest(hash_token(token), stored_hash)  # type: ignore[arg-type]
