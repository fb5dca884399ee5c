"""`qhybrid keys create|list|revoke` on SQLite and PostgreSQL: a key shown once, stored as a hash."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from qhybrid.api.main import create_app
from qhybrid.cli import app
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import ApiKey


def test_create_list_revoke(database_url: str, data_dir: Path) -> None:
    runner = CliRunner()
    env = {"QHYBRID_DATA_DIR": str(data_dir), "QHYBRID_DATABASE_URL": database_url}

    created = runner.invoke(app, ["keys", "create", "--tenant", "desk-7"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.splitlines()[-1]  # the last line is the key and nothing else
    assert key.startswith("qhk_") and len(key) > 50 and " " not in key
    second = runner.invoke(app, ["keys", "create", "--tenant", "desk-9"], env=env)
    other_key = second.stdout.splitlines()[-1]

    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "tenant", "prefix", "created", "revoked"]
    first_row = lines[1].split()
    assert first_row[1:3] == ["desk-7", key[:12]] and first_row[4] == "-"
    assert key not in listed.stdout and key[12:20] not in listed.stdout

    db = Database(database_url)
    with db.read() as session:
        hashes = [row.key_hash for row in session.query(ApiKey).all()]
    db.dispose()
    assert len(hashes) == 2 and all(key[13:] not in h and len(h) == 64 for h in hashes)

    settings = Settings(data_dir=data_dir, database_url=database_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        revoked = runner.invoke(app, ["keys", "revoke", first_row[0]], env=env)
        assert revoked.exit_code == 0, revoked.output
        assert "revoked key" in revoked.stdout
        # A key the API has not seen since: refused at once (a seen one within 2 s, its cache).
        assert client.get("/jobs", headers={"Authorization": f"Bearer {other_key}"}).status_code == 200
    with TestClient(create_app(settings)) as client:
        assert client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    relisted = runner.invoke(app, ["keys", "list"], env=env).stdout.splitlines()
    assert relisted[1].split()[4] != "-"

    unknown = runner.invoke(app, ["keys", "revoke", "999"], env=env)
    assert unknown.exit_code == 2
    assert "no API key with id 999" in unknown.stderr
    bad_name = runner.invoke(app, ["keys", "create", "--tenant", "desk 7; drop"], env=env)
    assert bad_name.exit_code == 2
    assert "tenant name" in bad_name.stderr
