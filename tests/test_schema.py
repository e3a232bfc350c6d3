"""The migrated schema carries every index the models declare (queries are planned on
what the migrations built, not on the models)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from models import Base


def test_the_migrations_build_every_index_the_models_declare(engine: Engine) -> None:
    # Read from the catalogue: the inspector leaves out SQLite's expression indexes.
    catalogue = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE tablename = :table"
    )
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            declared = {index.name for index in table.indexes}
            built = set(connection.scalars(text(catalogue), {"table": table.name}))
            assert declared <= built, (table.name, declared - built)
