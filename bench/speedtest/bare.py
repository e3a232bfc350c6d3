"""The stack's own floor for a create: a FastAPI app that validates the create body with
Pydantic, INSERTs it as one SQLAlchemy ORM row into SQLite (WAL), commits and answers it,
served by uvicorn exactly as `python main.py` serves Hypervisor. No token, no membership,
no lock, no scheduling, no events: whatever a create costs in this stack, it costs at least
this. Its own module because it is a separate program (`python bare.py`), which only
the floor part starts; it shares nothing with Hypervisor's code on purpose.

Environment: BARE_DATABASE (a SQLite file path) and BARE_PORT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(64))
    organization_name: Mapped[str] = mapped_column(String(64))
    docker_image: Mapped[str] = mapped_column(String(255))
    required_cpu: Mapped[int]
    required_ram: Mapped[int]
    required_gpu: Mapped[int]
    priority: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CreateBody(BaseModel):
    cluster_name: str = Field(min_length=1, max_length=64)
    organization_name: str = Field(min_length=1, max_length=64)
    docker_image: str = Field(min_length=1, max_length=255)
    required_cpu: int = Field(ge=0)
    required_ram: int = Field(ge=0)
    required_gpu: int = Field(ge=0)
    priority: int = Field(ge=0, le=5)
    duration_seconds: int | None = Field(default=None, ge=1)


class Answer(CreateBody):
    model_config = ConfigDict(from_attributes=True)
    id: int
    status: str
    created_at: datetime


engine = create_engine(
    f"sqlite:///{os.environ.get('BARE_DATABASE', 'bare.db')}",
    connect_args={"check_same_thread": False},
)


@event.listens_for(engine, "connect")
def _wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


Base.metadata.create_all(engine)
sessions = sessionmaker(engine, expire_on_commit=False)
app = FastAPI()


def session() -> Iterator[Session]:
    with sessions() as opened:
        yield opened


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/deployment/create", status_code=201)
def create(body: CreateBody, db: Annotated[Session, Depends(session)]) -> Answer:
    row = Row(
        **body.model_dump(exclude={"duration_seconds"}),
        status="running",
        created_at=datetime.now(UTC),
    )
    db.add(row)
    db.commit()
    return Answer.model_validate(row)


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["BARE_PORT"]),
        log_level="warning",
        access_log=False,
        http="h11",
    )
