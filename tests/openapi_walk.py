"""Walk the served OpenAPI document: every request body's example, sent as Swagger UI would
pre-fill it, right after the README's walkthrough (org `acme-ml`, cluster `gpu-a`, users
`alice` and `bob`).

Used in-process (TestClient, on either database) and against a real server that has just
run the README's script; `client` is a TestClient or an httpx client, same interface.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PASSWORDS = {"alice": "correct horse battery", "bob": "another good password"}
# An invite code is a random secret: the one example no one can send as it is. The walk sends
# the organization's current code instead, after checking the example looks like one.
INVITE_CODE = re.compile(r"[A-Za-z0-9_-]{22}")


def request_examples(spec: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, media type, example) of every operation with a request body, in the
    document's order; the example is the media type's own, else its schema's first."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            ((media_type, content),) = body["content"].items()
            example = content.get("example")
            if example is None:
                example = _schema_of(spec, content["schema"])["examples"][0]
            yield method, path, media_type, example


def _schema_of(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The component a body schema names, directly or as the one `$ref` of an `anyOf`."""
    refs = [schema.get("$ref")] + [option.get("$ref") for option in schema.get("anyOf", [])]
    (ref,) = [ref for ref in refs if ref]
    component: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return component


def _login(client: Any, username: str, password: str) -> dict[str, str]:
    answer = client.post("/user/login", data={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def send_every_example(client: Any) -> list[tuple[str, str, int, str]]:
    """Send each request example to its endpoint, as the user who would: nobody for register
    and login, the newly registered user for join, alice (the admin) for the rest. Path
    parameters name the walkthrough's organization, member, cluster and training run.
    Returns (method, path, status, answer text) for each, in order."""
    spec = client.get("/openapi.json").json()
    alice = _login(client, "alice", PASSWORDS["alice"])
    running = client.get("/deployment/list/gpu-a?status=running", headers=alice).json()
    (training,) = [d["id"] for d in running["deployments"] if d["name"] == "train-llm"]
    path_values = {
        "org_name": "acme-ml",
        "username": "bob",
        "cluster_name": "gpu-a",
        "deployment_id": str(training),
    }
    registered: dict[str, str] = {}
    sent = []
    for method, path, media_type, example in request_examples(spec):
        headers: dict[str, str] | None = alice
        if path in ("/user/register", "/user/login"):
            headers = None
        if path == "/user/register":
            registered = example
        if path == "/user/join":
            assert registered, "the register example comes first and makes the joining user"
            headers = _login(client, registered["username"], registered["password"])
            assert INVITE_CODE.fullmatch(example["invite_code"]), example
            code = client.get("/organization/get-invite-code/acme-ml", headers=alice)
            example = {**example, "invite_code": code.json()["invite_code"]}
        url = re.sub(r"\{(\w+)\}", lambda match: path_values[match[1]], path)
        body = {"data": example} if media_type.endswith("form-urlencoded") else {"json": example}
        answer = client.request(method.upper(), url, headers=headers, **body)
        sent.append((method, path, answer.status_code, answer.text))
    return sent
