"""``qhybrid keys create|list|revoke``: the tenants' API keys in the database.

They work on the configured database (``QHYBRID_DATABASE_URL``, else the embedded SQLite file) and
hash keys under the deployment's pepper (``QHYBRID_API_KEY_PEPPER``, else the key file in the data
dir): run them with the same settings as the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from qhybrid.cli.output import ExitCode, fail, stdout
from qhybrid.cli.settings import checked_database, checked_settings

if TYPE_CHECKING:
    from qhybrid.core.config import Settings
    from qhybrid.jobs.tenants import KeyStore

keys_app = typer.Typer(help="API keys of tenants (stored as keyed hashes only).", no_args_is_help=True)


def _store(settings: Settings) -> KeyStore:
    from qhybrid.core.keyfile import KeyFileError
    from qhybrid.jobs.database import Database
    from qhybrid.jobs.tenants import KeyStore, pepper_of

    checked_database(settings)
    try:
        pepper = pepper_of(settings)
    except KeyFileError as exc:
        fail(str(exc), ExitCode.REFUSED)
    return KeyStore(Database(settings.resolved_database_url), pepper)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for (created if new).")],
) -> None:
    """Create a key for a tenant; the key is printed once, as the last line of stdout."""
    from qhybrid.jobs.tenants import TenantError

    settings = checked_settings()
    try:
        info, key = _store(settings).create(tenant)
    except TenantError as exc:
        fail(str(exc), ExitCode.REFUSED)
    out = stdout()
    out.print(f"created key {info.id} ({info.prefix}…) for tenant {info.tenant}", markup=False)
    out.print("it is shown only now; the database keeps only a keyed hash of it:", markup=False)
    # The last line is the key alone, so `qhybrid keys create --tenant x | tail -n 1` captures it.
    typer.echo(key)


@keys_app.command("list")
def list_keys() -> None:
    """List keys: id, tenant, prefix, created, revoked (never a key or its hash)."""
    rows = _store(checked_settings()).list()
    lines = [("id", "tenant", "prefix", "created", "revoked")]
    lines += [
        (str(row.id), row.tenant, row.prefix, _when(row.created_at), _when(row.revoked_at)) for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for line in lines:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(help="The id `qhybrid keys list` shows.")]) -> None:
    """Revoke a key: the API refuses it within seconds (its cache holds a key for 2 s)."""
    from qhybrid.jobs.tenants import TenantError

    try:
        info = _store(checked_settings()).revoke(key_id)
    except TenantError as exc:
        fail(str(exc), ExitCode.REFUSED)
    typer.echo(f"revoked key {info.id} ({info.prefix}…) of tenant {info.tenant} at {_when(info.revoked_at)}")
