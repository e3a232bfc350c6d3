"""What every command shares: the options `-o` and `--org`, the logged-in client, the
consoles, and which organization a command means when none is named."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

from cli import credentials
from cli.client import Api, HvError

# Results (tables, sentences, JSON) on standard output; remarks and errors on standard
# error, so what a script captures is only the result.
console = Console()
messages = Console(stderr=True, highlight=False)


class Format(StrEnum):
    table = "table"
    json = "json"


class Role(StrEnum):
    admin = "admin"
    developer = "developer"
    viewer = "viewer"


class Status(StrEnum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Outcome(StrEnum):
    completed = "completed"
    failed = "failed"


OutputOption = Annotated[
    Format, typer.Option("--output", "-o", help="table for people, json for scripts")
]
OrgOption = Annotated[
    str | None,
    typer.Option(
        "--org",
        envvar="HV_ORG",
        help="Organization (default: HV_ORG, else the only one you belong to)",
        show_default=False,
    ),
]
CpuOption = Annotated[int, typer.Option("--cpu", min=0, help="Cores")]
RamOption = Annotated[int, typer.Option("--ram", min=0, help="GiB")]
GpuOption = Annotated[int, typer.Option("--gpu", min=0, help="Devices")]


def now() -> datetime:
    return datetime.now(UTC)


def connect() -> Api:
    """A client for the server and token of `hv login` (or HV_URL / HV_TOKEN); fails with
    a hint to log in when there is no token."""
    found = credentials.current(os.environ)
    api = Api(found.url, found.token)
    api.require_login()
    return api


def say(message: str) -> None:
    """A command's result as a sentence, on standard output."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A remark beside the result (standard error, so `$(hv ...)` captures only the result)."""
    messages.print(message, markup=False, soft_wrap=True)


def organization(api: Api, given: str | None) -> str:
    """The organization a command acts in: `--org` (or HV_ORG), else the only one the
    caller belongs to. Several and none named is a usage error: guessing could act in
    the wrong team's organization."""
    if given:
        return given
    me: dict[str, Any] = api.get("/user/me")
    names = [o["name"] for o in me["organizations"]]
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise HvError(
            "you belong to no organization yet: `hv org create NAME` or `hv org join CODE`"
        )
    raise typer.BadParameter(
        f"you belong to several organizations ({', '.join(names)}): pass --org or set HV_ORG",
        param_hint="'--org'",
    )
