"""Tenants and their API keys: created, listed and revoked by the CLI, looked up by the API.

A key is shown once, when it is created, and stored only as ``HMAC-SHA256(pepper, key)``. The
pepper is a deployment secret (``QHYBRID_API_KEY_PEPPER``, else ``<data_dir>/keys/api-key-pepper``,
0600, created on first use), so a copy of the database alone does not let anyone test guesses
offline. A presented key is found by its hash, with an equality lookup on a unique index: no key
is ever compared byte by byte, so the time taken tells nothing about how much of a key matched.

Keys look like ``qhk_<8 characters>_<43 characters>``: 32 random bytes after a random 8-character
prefix. The prefix (``qhk_XXXXXXXX``) is stored in clear for ``qhybrid keys list`` and tells nothing
about the secret part.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from qhybrid.core.config import TENANT_NAME, Settings
from qhybrid.core.keyfile import load_key
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import ApiKey, Tenant, utcnow

#: The tenant of jobs submitted without keys, and of bare keys in ``QHYBRID_API_KEYS``.
DEFAULT_TENANT = "default"
#: What a tenant name may be: it shows in logs and in the key list.
TENANT_PATTERN = TENANT_NAME
KEY_MARK = "qhk_"
_PREFIX_CHARS = 8


class TenantError(ValueError):
    """A tenant name or key id that cannot be used."""


def check_tenant(name: str) -> str:
    """``name`` if it is a valid tenant name.

    Raises:
        TenantError: Naming the rule.
    """
    if not TENANT_PATTERN.match(name):
        raise TenantError(
            f"tenant name {name!r} is not allowed: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return name


def pepper_of(settings: Settings) -> bytes:
    """The deployment's API-key pepper: the setting, else the key file (created on first use)."""
    value = settings.api_key_pepper.get_secret_value() if settings.api_key_pepper else None
    return load_key(value, settings.api_key_pepper_path, setting="QHYBRID_API_KEY_PEPPER")


def key_hash(pepper: bytes, key: str) -> str:
    """HMAC-SHA256 of ``key`` under ``pepper``, hex: what the database holds."""
    return hmac.new(pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its display prefix."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    prefix = KEY_MARK + "".join(secrets.choice(alphabet) for _ in range(_PREFIX_CHARS))
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


@dataclass(frozen=True)
class KeyInfo:
    """What ``qhybrid keys list`` shows of a key: never the key, nor its hash."""

    id: int
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.tenant, row.prefix, row.created_at, row.revoked_at)


class KeyStore:
    """The ``tenants`` and ``api_keys`` tables.

    Args:
        db: The database.
        pepper: The deployment's pepper (:func:`pepper_of`).
    """

    def __init__(self, db: Database, pepper: bytes) -> None:
        self.db = db
        self._pepper = pepper

    def __repr__(self) -> str:
        return "KeyStore(<pepper>)"

    def create(self, tenant: str) -> tuple[KeyInfo, str]:
        """A new key for ``tenant`` (created if new).

        Returns:
            The key's record and the key itself, which nothing stores.

        Raises:
            TenantError: If the tenant name is not allowed.
        """
        check_tenant(tenant)
        key, prefix = new_key()
        now = utcnow()
        with self.db.write() as session:
            if session.get(Tenant, tenant) is None:
                session.add(Tenant(name=tenant, created_at=now))
                session.flush()
            row = ApiKey(tenant=tenant, key_hash=key_hash(self._pepper, key), prefix=prefix, created_at=now)
            session.add(row)
            session.flush()
            info = _info(row)
        return info, key

    def list(self) -> list[KeyInfo]:
        """Every key, oldest first, revoked ones included."""
        with self.db.read() as session:
            return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id)).all()]

    def revoke(self, key_id: int) -> KeyInfo:
        """Revoke a key; revoking a revoked key keeps its first revocation time.

        Raises:
            TenantError: If there is no such key.
        """
        with self.db.write() as session:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = session.get(ApiKey, key_id)
            if row is None:
                raise TenantError(f"no API key with id {key_id}")
            session.flush()
            session.refresh(row)
            return _info(row)

    def tenant_of(self, key: str) -> str | None:
        """The tenant of a live key, or ``None`` for an unknown or revoked one."""
        digest = key_hash(self._pepper, key)
        with self.db.read() as session:
            row = session.execute(
                select(ApiKey.tenant, ApiKey.revoked_at).where(ApiKey.key_hash == digest)
            ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        return str(row.tenant)

    def any_keys(self) -> bool:
        """Whether any key was ever created (revoked keys count: the API stays closed)."""
        with self.db.read() as session:
            return session.scalar(select(ApiKey.id).limit(1)) is not None
