"""``qhybrid kek rotate``: a new key-encryption key, and every sealed job key re-sealed under it.

With the embedded key file (``<data_dir>/keys/kek``): a new KEK is written first in the file,
ahead of the current one, so every process can open keys under either while the rotation runs;
then every sealed key is re-sealed in one database transaction (all or nothing); then the file
keeps the new KEK and the one it replaced (a worker started before the rotation still seals
under it until restarted, and a running worker reloads the file when it meets the new one), and
drops older KEKs that no job uses any more.

With ``QHYBRID_KEY_ENCRYPTION_KEY`` (a secret manager): put the new key first in the setting,
comma-separated from the old ones, everywhere; ``rotate`` then re-seals every key under it.
Remove the old keys from the setting once every worker runs with the new value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from qhybrid.cli.output import ExitCode, fail
from qhybrid.cli.settings import checked_database, checked_settings

if TYPE_CHECKING:
    from qhybrid.jobs.store import JobStore
    from qhybrid.proxy.keys import KeyVault

kek_app = typer.Typer(
    help="The key-encryption key that seals the per-job obfuscation keys.", no_args_is_help=True
)


def _reseal_all(store: JobStore, vault: KeyVault) -> tuple[int, int]:
    from qhybrid.jobs.store import SealedKey
    from qhybrid.jobs.subproblems import task_name
    from qhybrid.proxy.keys import KeyVaultError

    def reseal(key: SealedKey) -> bytes:
        task = None if key.part is None else task_name(*key.part)
        return vault.reseal(key.blob, job_id=key.job_id, task=task)

    try:
        return store.reseal_keys(reseal)
    except KeyVaultError as exc:
        fail(f"nothing was re-sealed: {exc}", ExitCode.REFUSED)


@kek_app.command("rotate")
def rotate() -> None:
    """Create a new KEK and re-seal every stored job key under it (one transaction)."""
    from qhybrid.jobs.database import Database
    from qhybrid.jobs.store import JobStore
    from qhybrid.proxy.keys import (
        KekMissingError,
        KeyVault,
        kek_id,
        load_keyring,
        new_kek,
        sealed_kid,
        write_keyring,
    )

    settings = checked_settings()
    checked_database(settings)
    store = JobStore(Database(settings.resolved_database_url))
    path = settings.kek_path
    if settings.key_encryption_key is not None:
        try:
            ring = load_keyring(settings.key_encryption_key.get_secret_value(), path)
        except ValueError as exc:
            fail(str(exc), ExitCode.REFUSED)
        total, changed = _reseal_all(store, KeyVault(ring))
        typer.echo(
            f"re-sealed {changed} of {total} job keys under {kek_id(ring[0])}, the first key of "
            "QHYBRID_KEY_ENCRYPTION_KEY; remove the other keys from the setting once every worker "
            "runs with this value"
        )
        return
    try:
        old = load_keyring(None, path, sealed_keys=store.count_sealed_keys())
    except (KekMissingError, ValueError) as exc:
        fail(str(exc), ExitCode.REFUSED)
    new = new_kek()
    # The new KEK goes in first, the old ones stay: every key opens at every moment.
    write_keyring(path, [new, *old])
    total, changed = _reseal_all(store, KeyVault([new, *old]))
    in_use = {kid for key in store.sealed_keys() if (kid := sealed_kid(key.blob)) is not None}
    kept = [new, old[0], *(k for k in old[1:] if kek_id(k) in in_use)]
    write_keyring(path, kept)
    dropped = len(old) + 1 - len(kept)
    typer.echo(
        f"new key-encryption key {kek_id(new)} in {path}; re-sealed {changed} of {total} job keys; "
        f"the previous key {kek_id(old[0])} stays readable for workers started before now "
        f"(restart them); {dropped} older key(s) dropped"
    )
