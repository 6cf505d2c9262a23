"""Regenerate the initial migration from the models.

Used while nothing has been released (no database in the field to upgrade): the schema stays one
readable migration. After the first release, new migrations are added with
`uv run alembic -c ... revision --autogenerate` instead and this script is retired.
"""

from __future__ import annotations

import tempfile

from alembic import command

from models.db import MIGRATIONS, alembic_config

versions = MIGRATIONS / "versions"
for old in versions.glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{tmp}/empty.db"
    command.revision(alembic_config(url), message="initial schema", autogenerate=True, rev_id="0001")
print("regenerated:", *sorted(p.name for p in versions.glob("0001_*.py")))
