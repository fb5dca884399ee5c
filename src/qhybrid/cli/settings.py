"""The server commands' settings and database, checked once with one line and an exit code on failure."""

from __future__ import annotations

from qhybrid.cli.output import ExitCode, fail
from qhybrid.core.config import Settings


def checked_settings() -> Settings:
    """The settings from the environment; a bad value is one line naming the variable, exit 2."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"QHYBRID_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            if error["loc"]
            else str(error["msg"])
            for error in exc.errors()
        )
        fail(f"invalid setting: {problems}", ExitCode.REFUSED)


def checked_database(settings: Settings) -> None:
    """Migrate the database now, so that a missing one is one line and exit 3, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from qhybrid.jobs.database import Database

    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    try:
        db.migrate()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        url = db.engine.url.render_as_string(hide_password=True)
        fail(f"cannot use the database at {url}: {reason}", ExitCode.UNREACHABLE)
    finally:
        db.dispose()
