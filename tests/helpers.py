"""Small API helpers so tests read like the spec."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: TestClient, username: str | None = None, password: str = PASSWORD) -> str:
    """Register a user and return its username."""
    username = username or unique("user")
    response = client.post("/user/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return username


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Log in and return the Authorization header."""
    response = client.post("/user/login", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return auth(response.json()["access_token"])


def new_user(client: TestClient) -> dict[str, str]:
    """Register and log in a fresh user; returns its Authorization header."""
    return login(client, register(client))


def create_org(
    client: TestClient, headers: dict[str, str], name: str | None = None
) -> dict[str, Any]:
    name = name or unique("org")
    response = client.post("/organization/create", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def member_with_role(
    client: TestClient, admin: dict[str, str], org: str, role: str
) -> dict[str, str]:
    """A new user who joined `org` with `role` through a freshly rotated invite code."""
    response = client.post(
        f"/organization/{org}/invite-code/rotate", json={"role": role}, headers=admin
    )
    assert response.status_code == 200, response.text
    headers = new_user(client)
    joined = client.post(
        "/user/join", json={"invite_code": response.json()["invite_code"]}, headers=headers
    )
    assert joined.status_code == 200, joined.text
    return headers


def create_cluster(
    client: TestClient,
    headers: dict[str, str],
    org: str,
    name: str | None = None,
    cpu: int = 16,
    ram: int = 64,
    gpu: int = 4,
) -> dict[str, Any]:
    body = {
        "name": name or unique("cluster"),
        "organization_name": org,
        "total_cpu": cpu,
        "total_ram": ram,
        "total_gpu": gpu,
    }
    response = client.post("/cluster/create", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def rotate_invite(
    client: TestClient, admin: dict[str, str], org: str, **body: Any
) -> dict[str, Any]:
    """Rotate `org`'s invite code (optional `role`, `expires_in_hours`); returns the new code."""
    response = client.post(f"/organization/{org}/invite-code/rotate", json=body, headers=admin)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def reservation(org: str, cluster: str, cpu: int = 0, ram: int = 0, gpu: int = 0) -> dict[str, Any]:
    """The body of `/cluster/allocate` and `/cluster/release`."""
    return {"cluster_name": cluster, "organization_name": org, "cpu": cpu, "ram": ram, "gpu": gpu}


def resize_body(org: str, cluster: str, cpu: int, ram: int, gpu: int) -> dict[str, Any]:
    """The body of `PATCH /cluster/resize`."""
    return {
        "cluster_name": cluster,
        "organization_name": org,
        "total_cpu": cpu,
        "total_ram": ram,
        "total_gpu": gpu,
    }


def moment(value: str) -> datetime:
    """An ISO-8601 timestamp of the API, as an aware datetime (must be UTC)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def bench_script(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a script under bench/ as a module for its smoke test, leaving neither it in
    sys.modules nor what its entry point adds to sys.path behind."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec.loader.exec_module(module)
    return module
