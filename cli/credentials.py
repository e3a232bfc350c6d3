"""Where `hv` keeps who you are: `$XDG_CONFIG_HOME/hypervisor/credentials.json`, mode 0600.

`HV_URL` and `HV_TOKEN` override what the file says, so a script or CI job can run `hv`
without ever writing a token to disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Credentials:
    """The server to talk to and the bearer token it issued (empty when logged out)."""

    url: str = DEFAULT_URL
    token: str = ""
    username: str = ""
    expires_at: str = ""


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """`$XDG_CONFIG_HOME/hypervisor`, with `~/.config` when the variable is unset or empty
    (as the XDG Base Directory specification says)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hypervisor"


def credentials_path(environ: Mapping[str, str] = os.environ) -> Path:
    return config_dir(environ) / "credentials.json"


def stored(environ: Mapping[str, str] = os.environ) -> Credentials:
    """What the file holds; an absent or unreadable file is the same as logged out."""
    try:
        data = json.loads(credentials_path(environ).read_text())
    except (OSError, ValueError):
        return Credentials()
    if not isinstance(data, dict):
        return Credentials()
    fields = {key: data[key] for key in Credentials.__dataclass_fields__ if key in data}
    if not all(isinstance(value, str) for value in fields.values()):
        return Credentials()
    return Credentials(**fields)


def current(environ: Mapping[str, str] = os.environ) -> Credentials:
    """The file's credentials with `HV_URL` and `HV_TOKEN` applied on top. The stored token
    goes only to the server it was issued by: an `HV_URL` naming another server gets none
    (a token of one server must never reach another, perhaps over plain http)."""
    found = stored(environ)
    url = (environ.get("HV_URL") or found.url or DEFAULT_URL).rstrip("/")
    same_server = url == found.url.rstrip("/")
    token = environ.get("HV_TOKEN") or (found.token if same_server else "")
    username = found.username if same_server else ""
    return Credentials(url=url, token=token, username=username, expires_at="")


def save(credentials: Credentials, environ: Mapping[str, str] = os.environ) -> Path:
    """Write the file readable by its owner only, replacing any previous one atomically.

    The token is never on disk with looser permissions, not even for an instant: the file
    is created 0600 (umask may only remove bits) and then renamed over the old one."""
    directory = config_dir(environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "credentials.json"
    partial = directory / f".credentials.{os.getpid()}.tmp"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # An older partial file of the same pid keeps its mode through O_CREAT: set it.
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(asdict(credentials), file, indent=2)
            file.write("\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def forget(environ: Mapping[str, str] = os.environ) -> bool:
    """Delete the file; False when there was none."""
    try:
        credentials_path(environ).unlink()
    except FileNotFoundError:
        return False
    return True
