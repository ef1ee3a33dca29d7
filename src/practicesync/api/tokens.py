"""Token strings: `psk_<prefix>_<secret>`. Pure; the model and actions keep the rest."""

import hashlib
import hmac
import secrets

SCHEME = "psk"
PREFIX_BYTES = 6  # 12 hex characters: finds the row, never enough to use the token
SECRET_BYTES = 32


def new_token() -> tuple[str, str, str]:
    """(prefix, secret, the whole token as the client sends it)."""
    prefix, secret = secrets.token_hex(PREFIX_BYTES), secrets.token_urlsafe(SECRET_BYTES)
    return prefix, secret, f"{SCHEME}_{prefix}_{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed token, else None. The secret may hold "_"."""
    scheme, _, rest = token.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != 2 * PREFIX_BYTES or not secret:
        return None
    return prefix, secret


def digest(secret: str) -> str:
    # A fast hash is enough: the secret is 256 random bits, not a password to guess.
    return hashlib.sha256(secret.encode()).hexdigest()


# Compared against when no token has the prefix, so a miss takes as long as a wrong secret.
_NOTHING = digest("")


def secret_matches(secret: str, stored: str | None) -> bool:
    return hmac.compare_digest(digest(secret), stored or _NOTHING) and stored is not None
