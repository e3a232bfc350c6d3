"""The `hv` command: its commands, logging in and out, and the one place failures become
an exit status and a message (never a traceback)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Annotated

import typer

from cli import credentials, deployments, live, render
from cli.client import Api, HvError
from cli.common import Format, OutputOption, connect, console, note, now, say
from cli.organizations import cluster_app, org_app

app = typer.Typer(
    name="hv",
    help="Hypervisor from the terminal: organizations, clusters, deployments and their queue.",
    no_args_is_help=True,
    add_completion=False,
    # Failures are reported by `main` in one line; a traceback is never what a user needs.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _read_password(from_stdin: bool) -> str:
    if not from_stdin:
        return str(typer.prompt("Password", hide_input=True))
    # As `docker login --password-stdin`: all of standard input, less its final newline.
    password = sys.stdin.read()
    password = password[:-1] if password.endswith("\n") else password
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise typer.BadParameter(
            "standard input holds no password", param_hint="'--password-stdin'"
        )
    return password


UrlOption = Annotated[
    str | None,
    typer.Option(help="Server (default: HV_URL, else the last one, else http://127.0.0.1:8000)"),
]
UsernameOption = Annotated[
    str | None, typer.Option("--username", "-u", help="Asked when not given")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input")
]


@app.command()
def register(
    url: UrlOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create an account (`POST /user/register`), then log in as it."""
    server, username, password = _account(url, username, password_stdin)
    with Api(server) as api:
        api.post("/user/register", {"username": username, "password": password})
        say(f"registered {username} on {server}")
        _log_in(api, username, password)


@app.command()
def login(
    url: UrlOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Log in and keep the token in $XDG_CONFIG_HOME/hypervisor/credentials.json (0600)."""
    server, username, password = _account(url, username, password_stdin)
    with Api(server) as api:
        _log_in(api, username, password)


def _account(url: str | None, username: str | None, password_stdin: bool) -> tuple[str, str, str]:
    """The server, username and password a register or login is for."""
    if password_stdin and not username:
        raise typer.BadParameter("--password-stdin needs --username", param_hint="'--username'")
    previous = credentials.stored(os.environ)
    server = (url or os.environ.get("HV_URL") or previous.url or credentials.DEFAULT_URL).rstrip(
        "/"
    )
    if not username:
        username = str(typer.prompt("Username", default=previous.username or None))
    return server, username, _read_password(password_stdin)


def _log_in(api: Api, username: str, password: str) -> None:
    token = api.request("POST", "/user/login", form={"username": username, "password": password})
    expires_at = now() + timedelta(seconds=int(token["expires_in"]))
    path = credentials.save(
        credentials.Credentials(
            url=api.url,
            token=token["access_token"],
            username=username,
            expires_at=expires_at.isoformat(timespec="seconds"),
        ),
        os.environ,
    )
    say(f"logged in to {api.url} as {username}")
    note(f"token valid for {render.span(token['expires_in'])}, kept in {path}")


@app.command()
def logout() -> None:
    """Forget the stored token (the server keeps no session to end)."""
    if credentials.forget(os.environ):
        say("logged out")
    else:
        say("not logged in")


@app.command()
def whoami(output: OutputOption = Format.table) -> None:
    """Who the token says you are, on which server, and your organizations."""
    with connect() as api:
        me = api.get("/user/me")
        server = api.url
    if output is Format.json:
        render.write_json(me)
        return
    say(f"{me['username']} on {server}")
    if me["organizations"]:
        console.print(render.organizations_table(me["organizations"]))


# After register, login, logout and whoami, in the order `hv --help` lists them.
app.add_typer(org_app, name="org")
app.add_typer(cluster_app, name="cluster")
app.command("run")(deployments.run)
app.command("ps")(deployments.ps)
app.command("queue")(deployments.queue)
app.command("show")(deployments.show)
app.command("cancel")(deployments.cancel)
app.command("checkpoint")(deployments.checkpoint)
app.command("report")(deployments.report)
app.command("events")(live.events)


def main() -> None:
    """The console script: run a command, turn a failure into its message and status.

    0 success; 1 the API refused (its `detail`), the server could not be reached, or a
    followed deployment ended failed or cancelled; 2 a usage error; 130 Ctrl-C."""
    try:
        app()
    except HvError as error:
        sys.stderr.write(f"error: {error.message}\n")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - a bug in hv still gets one line, no traceback
        if os.environ.get("HV_DEBUG"):
            raise
        sys.stderr.write(
            f"error: unexpected {type(error).__name__}: {error} (HV_DEBUG=1 shows where)\n"
        )
        sys.exit(1)
