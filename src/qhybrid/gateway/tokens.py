"""Client tokens minted by the gateway, so that no caller can choose the bytes a token carries.

A provider task is created under a client token (its idempotency key), and the token crosses the
boundary. Were the caller free to pick it, 128 chosen bits would leave with every submission. So
the gateway mints every token itself, and its route table refuses any token it did not mint::

    token = hex( nonce ‖ HMAC-SHA256(key, "qhybrid-client-token/v1" ‖ nonce)[:8] )

``nonce`` is 8 bytes from the OS's CSPRNG, the tag 8 bytes of an HMAC under the gateway's token
key: 32 lowercase hex digits, indistinguishable from random to the provider (so the cloud API's
token format did not change). Without the key nobody can make a token that passes, and the
minter picks the nonce, so a caller's only lever is to mint many tokens and keep one it likes:
``log2(mints)`` bits per submission, and the journey mints one per attempt.

The journey stores the minted token *before* the provider call (the at-most-once guarantee), so
a token must stay valid in every worker and after a restart: the key comes from
``QHYBRID_EGRESS_TOKEN_KEY`` (base64 of 32 bytes; set it on every host of a multi-host
deployment) or, in the embedded default, from ``<data_dir>/gateway/token-key``, created on first
use with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from qhybrid.core.keyfile import KEY_BYTES, KeyFileError, load_key

#: Domain separation of the tag: the key is used for nothing else, but a version costs nothing.
_CONTEXT = b"qhybrid-client-token/v1"
_NONCE_BYTES = 8
_TAG_BYTES = 8

#: What a token looks like on the wire (the route table checks the tag as well).
TOKEN_PATTERN = re.compile(r"[0-9a-f]{32}")


class TokenKeyError(KeyFileError):
    """The token key is missing, malformed, or its file is readable by others."""


#: Why a token minted elsewhere cannot be used here, and what the operator sets to fix it.
NOT_MINTED_HERE = (
    "was minted under another gateway token key (another host's QHYBRID_EGRESS_TOKEN_KEY, or its "
    "<data_dir>/gateway/token-key): this gateway refuses to send it, so the task can be neither "
    "looked up nor submitted from here; set the same QHYBRID_EGRESS_TOKEN_KEY on every worker host"
)


class ForeignTokenError(TokenKeyError):
    """Tokens stored for unsubmitted tasks were minted under another token key (another host's)."""


class TokenMinter:
    """Mints client tokens and recognises the ones it minted.

    Args:
        key: 32 secret bytes, the same in every process that submits or looks tasks up.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise TokenKeyError(f"the token key must be {KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "TokenMinter(<secret>)"

    def _tag(self, nonce: bytes) -> bytes:
        return hmac.new(self._key, _CONTEXT + nonce, hashlib.sha256).digest()[:_TAG_BYTES]

    def mint(self) -> str:
        """A fresh token: a random nonce and its tag, as 32 lowercase hex digits."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return (nonce + self._tag(nonce)).hex()

    def is_minted(self, token: object) -> bool:
        """Whether ``token`` is a token this key minted (constant-time tag comparison)."""
        if not isinstance(token, str) or TOKEN_PATTERN.fullmatch(token) is None:
            return False
        raw = bytes.fromhex(token)
        return hmac.compare_digest(raw[_NONCE_BYTES:], self._tag(raw[:_NONCE_BYTES]))


def load_token_key(value: str | None, path: Path) -> bytes:
    """The gateway's token key: ``value`` (base64) if given, else the key file, created if absent.

    Args:
        value: ``QHYBRID_EGRESS_TOKEN_KEY``, base64 of 32 bytes, or ``None``.
        path: The key file of the embedded default.

    Returns:
        32 bytes.

    Raises:
        TokenKeyError: On a malformed value, or a key file of the wrong size or readable by others.
    """
    try:
        return load_key(value, path, setting="QHYBRID_EGRESS_TOKEN_KEY")
    except KeyFileError as exc:
        raise TokenKeyError(str(exc)) from exc
