"""The OpenAPI document as a newcomer uses it in Swagger UI: an operation list that reads
well, examples that work as they are, and both shapes of a 422 where both occur."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from openapi_walk import PASSWORDS, send_every_example
from pydantic import BaseModel

import schemas
from helpers import auth
from routes import clusters, deployments, events, operations, organizations, users

# The operations whose examples the walk sends, in the document's order.
WALKED = [
    ("post", "/user/register"),
    ("post", "/user/login"),
    ("post", "/user/join"),
    ("post", "/organization/create"),
    ("post", "/organization/{org_name}/invite-code/rotate"),
    ("put", "/organization/{org_name}/members/{username}"),
    ("post", "/cluster/create"),
    ("post", "/cluster/allocate"),
    ("post", "/cluster/release"),
    ("patch", "/cluster/resize"),
    ("post", "/deployment/create"),
    ("post", "/deployment/preview"),
    ("post", "/deployment/{deployment_id}/checkpoint"),
    ("post", "/deployment/{deployment_id}/status"),
]


def run_walkthrough_setup(client: TestClient) -> dict[str, int]:
    """What the README's walkthrough leaves behind: alice's org acme-ml with bob in it, the
    cluster gpu-a (32 cpu, 256 GiB, 4 gpu), the training run back after its preemption, the
    evaluation waiting, the urgent fine-tune cancelled. Returns the deployments' ids."""
    tokens = {}
    for username, password in PASSWORDS.items():
        body = {"username": username, "password": password}
        assert client.post("/user/register", json=body).status_code == 201
        login = client.post("/user/login", data=body)
        tokens[username] = auth(login.json()["access_token"])
        if username == "alice":
            assert (
                client.post(
                    "/organization/create", json={"name": "acme-ml"}, headers=tokens["alice"]
                ).status_code
                == 201
            )
    alice, bob = tokens["alice"], tokens["bob"]
    code = client.get("/organization/get-invite-code/acme-ml", headers=alice).json()
    assert client.post(
        "/user/join", json={"invite_code": code["invite_code"]}, headers=bob
    ).is_success
    cluster = {"name": "gpu-a", "organization_name": "acme-ml"}
    capacity = {"total_cpu": 32, "total_ram": 256, "total_gpu": 4}
    assert client.post("/cluster/create", json={**cluster, **capacity}, headers=alice).is_success
    hold = {"cluster_name": "gpu-a", "organization_name": "acme-ml", "cpu": 0, "ram": 0, "gpu": 2}
    assert client.post("/cluster/allocate", json=hold, headers=alice).json()["allocated_gpu"] == 2
    assert client.post("/cluster/release", json=hold, headers=alice).is_success

    def deploy(
        headers: dict[str, str], name: str, cpu: int, ram: int, gpu: int, **extra: Any
    ) -> int:
        body = {
            "cluster_name": "gpu-a",
            "organization_name": "acme-ml",
            "name": name,
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": cpu,
            "required_ram": ram,
            "required_gpu": gpu,
            **extra,
        }
        answer = client.post("/deployment/create", json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        deployment_id: int = answer.json()["id"]
        return deployment_id

    ids = {
        "train-llm": deploy(bob, "train-llm", 8, 64, 4, priority=1, duration_seconds=7200),
        "eval-llm": deploy(bob, "eval-llm", 4, 32, 2, priority=1),
        "hotfix-tune": deploy(alice, "hotfix-tune", 8, 64, 4, priority=9),
    }
    assert client.delete(f"/deployment/delete/{ids['hotfix-tune']}", headers=alice).is_success
    training = client.get(f"/deployment/{ids['train-llm']}", headers=bob).json()
    assert (training["status"], training["preemption_count"]) == ("running", 1)
    return ids


def test_every_request_example_works_as_it_is_after_the_walkthrough(client: TestClient) -> None:
    run_walkthrough_setup(client)

    sent = send_every_example(client)

    assert [(method, path) for method, path, _, _ in sent] == WALKED
    refused = [(method, path, status, text) for method, path, status, text in sent if status >= 300]
    assert refused == []


def _bodies() -> list[type[BaseModel]]:
    """Every model of `schemas` but the bases and the parts that are never a body alone."""
    parts = (schemas.Input, schemas.Output, schemas.Capacity, schemas.ValidationIssue)
    return [
        value
        for value in vars(schemas).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == "schemas"
        and value not in parts
    ]


@pytest.mark.parametrize("model", _bodies(), ids=lambda model: model.__name__)
def test_every_body_has_an_example_that_its_own_model_accepts(model: type[BaseModel]) -> None:
    examples = model.model_json_schema()["examples"]

    for example in examples:
        model.model_validate(example)
    assert "string" not in repr(examples)


def test_every_response_shows_a_real_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]

    def has_example(content: dict[str, Any]) -> bool:
        if "example" in content or "examples" in content:
            return True
        schema = content.get("schema", {})
        refs = [schema.get("$ref")] + [option.get("$ref") for option in schema.get("anyOf", [])]
        named = [ref.rsplit("/", 1)[-1] for ref in refs if ref]
        return bool(named) and all("examples" in components[name] for name in named)

    missing = [
        (method, path, status)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        for media_type, content in response.get("content", {}).items()
        if not has_example(content)
    ]
    assert missing == []


def test_each_operation_has_a_summary_a_person_reads_at_a_glance(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = [
        route
        for module in (users, organizations, clusters, deployments, operations, events)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    summaries = [
        operation["summary"] for item in spec["paths"].values() for operation in item.values()
    ]

    # Without its own, FastAPI titles the function's name: "Me", "Join", "Queue", "Healthz".
    assert [route.name for route in routes if not route.summary] == []
    assert sorted(summaries) == sorted(route.summary for route in routes)
    assert len(set(summaries)) == len(summaries)


@pytest.mark.parametrize(
    "path",
    ["/deployment/create", "/deployment/list/{cluster_name}", "/deployment/queue/{cluster_name}"],
)
def test_a_422_that_may_be_a_sentence_documents_both_shapes(client: TestClient, path: str) -> None:
    spec = client.get("/openapi.json").json()
    (operation,) = spec["paths"][path].values()

    unprocessable = operation["responses"]["422"]["content"]["application/json"]
    shapes = {option["$ref"].rsplit("/", 1)[-1] for option in unprocessable["schema"]["anyOf"]}
    assert shapes == {"ValidationErrors", "ErrorMessage"}
    examples = unprocessable["examples"]
    assert isinstance(examples["refused"]["value"]["detail"], str)
    assert isinstance(examples["validation"]["value"]["detail"], list)


def test_both_documented_422_shapes_are_what_the_service_sends(client: TestClient) -> None:
    run_walkthrough_setup(client)
    alice = auth(
        client.post(
            "/user/login", data={"username": "alice", "password": PASSWORDS["alice"]}
        ).json()["access_token"]
    )
    body = schemas.DeploymentCreate.model_json_schema()["examples"][0]

    too_big = client.post("/deployment/create", json={**body, "required_gpu": 8}, headers=alice)
    invalid = client.post("/deployment/create", json={**body, "required_gpu": -1}, headers=alice)

    assert (too_big.status_code, invalid.status_code) == (422, 422)
    assert "could never run" in schemas.ErrorMessage.model_validate(too_big.json()).detail
    issues = schemas.ValidationErrors.model_validate(invalid.json()).detail
    assert [issue.loc for issue in issues] == [["body", "required_gpu"]]
