"""SPEC §2 "a 500 on any input is a bug", SPEC §4 Operations: /docs and /openapi.json.

Schemathesis generates requests from the app's own OpenAPI document, valid and invalid,
and sends them with a real user's token; Hypothesis drives reservations and resizes against
a real cluster. Every answer must be below 500 and free of stack traces.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import make_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from database import make_engine
from helpers import create_cluster, create_org, new_user, reservation, resize_body
from main import create_app

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]

FUZZ_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def answering_500_instead_of_raising(app: FastAPI) -> ASGIApp:
    """The app as a server runs it: an unhandled error is the 500 already sent, not a raise.

    Starlette's error middleware sends the 500 response and then re-raises for the server
    to log; in-process test transports would turn that re-raise into a test error.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise

    return wrapped


@pytest.fixture
def fuzz_user(app: FastAPI) -> dict[str, str]:
    """A logged-in user who administers an organization with one cluster."""
    with TestClient(app) as c:
        headers = new_user(c)
        org = create_org(c, headers, "fuzz-org")["name"]
        create_cluster(c, headers, org, "fuzz-cluster")
    return headers


def served_schema() -> Any:
    """The OpenAPI document the app serves at /openapi.json, as schemathesis reads it.

    Loaded at import from an app whose database is never touched (schemathesis' fixture-based
    lazy loader does not work with pytest 9); each generated request goes to the per-test app.
    """
    schema_only = create_app(make_settings(Path(tempfile.gettempdir())), engine=SCHEMA_ENGINE)
    served = schemathesis.openapi.from_asgi("/openapi.json", schema_only)
    # Every endpoint: users, organizations, clusters, deployments, probes and metrics.
    loaded = served.include(
        path_regex=r"^/(user|organization|cluster|deployment)/|^/(healthz|readyz|metrics)$"
    )
    loaded.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    )
    return loaded


SCHEMA_ENGINE = make_engine("sqlite://")
schema = served_schema()

# Values JSON parsers accept (Python's does) that a JSON response cannot carry back: a
# validation error that echoed them verbatim would fail to encode (SPEC §2: 422, not 500).
UNENCODABLE = [float("nan"), float("inf"), float("-inf"), "\ud800"]


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Besides each generated JSON body, the same body with one field (or, for a list, one
    item) replaced by an unencodable value, sent as the raw JSON text Python would write."""
    operation = context.operation
    media_types = {alternative.media_type for alternative in operation.body} if operation else set()
    if media_types != {"application/json"} or not isinstance(body, dict | list) or not body:
        return st.just(body)
    slots = sorted(body) if isinstance(body, dict) else list(range(len(body)))

    def poisoned(choice: tuple[Any, Any]) -> bytes:
        slot, value = choice
        copy: Any = dict(body) if isinstance(body, dict) else list(body)
        copy[slot] = value
        return json.dumps(copy).encode()

    return st.one_of(
        st.just(body), st.tuples(st.sampled_from(slots), st.sampled_from(UNENCODABLE)).map(poisoned)
    )


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_generated_request_gets_a_server_error(
    case: Any, app: FastAPI, fuzz_user: dict[str, str]
) -> None:
    response = case.call(
        app=answering_500_instead_of_raising(app), base_url="http://testserver", headers=fuzz_user
    )

    assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


@given(
    action=st.sampled_from(["allocate", "release", "resize"]),
    cpu=st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 20)),
    ram=st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 80)),
    gpu=st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 8)),
)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_reservations_and_resizes_of_any_size_keep_the_cluster_consistent(
    app: FastAPI, fuzz_user: dict[str, str], action: str, cpu: int, ram: int, gpu: int
) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        if action == "resize":
            response = c.patch(
                "/cluster/resize",
                json=resize_body("fuzz-org", "fuzz-cluster", cpu, ram, gpu),
                headers=fuzz_user,
            )
        else:
            response = c.post(
                f"/cluster/{action}",
                json=reservation("fuzz-org", "fuzz-cluster", cpu, ram, gpu),
                headers=fuzz_user,
            )
        cluster = c.get("/cluster/list/fuzz-org", headers=fuzz_user).json()["clusters"][0]

    assert response.status_code in (200, 409, 422), response.text
    assert "Traceback" not in response.text
    for resource in ("cpu", "ram", "gpu"):
        assert 0 <= cluster[f"reserved_{resource}"] <= cluster[f"total_{resource}"]
        assert cluster[f"available_{resource}"] >= 0
        assert 0 <= cluster[f"total_{resource}"] <= 1_000_000
    assert cluster["total_cpu"] + cluster["total_ram"] + cluster["total_gpu"] >= 1


@pytest.mark.parametrize(
    "text", ["user\x00name", "\x00", "a" * 10_000, "ünïcödé-𝓊𝓈𝑒𝓇", "' OR 1=1 --"]
)
def test_hostile_text_in_unvalidated_fields_is_never_a_server_error(
    app: FastAPI, fuzz_user: dict[str, str], text: str
) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        responses = [
            c.post("/user/login", data={"username": text, "password": text}),
            c.post("/user/join", json={"invite_code": text[:128]}, headers=fuzz_user),
            c.post("/user/register", json={"username": text[:32], "password": text[:128]}),
        ]

    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text)
        assert "Traceback" not in response.text


# --- the documentation -----------------------------------------------------------------------

ENDPOINTS = {
    ("post", "/user/register"),
    ("post", "/user/login"),
    ("get", "/user/me"),
    ("post", "/user/join"),
    ("post", "/organization/create"),
    ("get", "/organization/get-invite-code/{org_name}"),
    ("post", "/organization/{org_name}/invite-code/rotate"),
    ("get", "/organization/list-users/{org_name}"),
    ("put", "/organization/{org_name}/members/{username}"),
    ("delete", "/organization/{org_name}/members/{username}"),
    ("post", "/cluster/create"),
    ("get", "/cluster/list/{org_name}"),
    ("post", "/cluster/allocate"),
    ("post", "/cluster/release"),
    ("patch", "/cluster/resize"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}

# The error codes each endpoint must document (SPEC §2 rows that apply to it).
ERRORS = {
    ("post", "/user/register"): {"409", "422"},
    ("post", "/user/login"): {"401", "422"},
    ("get", "/user/me"): {"401"},
    ("post", "/user/join"): {"400", "401", "409", "422"},
    ("post", "/organization/create"): {"401", "409", "422"},
    ("get", "/organization/get-invite-code/{org_name}"): {"401", "403", "404", "422"},
    ("post", "/organization/{org_name}/invite-code/rotate"): {"401", "403", "404", "422"},
    ("get", "/organization/list-users/{org_name}"): {"401", "404", "422"},
    ("put", "/organization/{org_name}/members/{username}"): {"401", "403", "404", "409", "422"},
    ("delete", "/organization/{org_name}/members/{username}"): {
        "401",
        "403",
        "404",
        "409",
        "422",
    },
    ("post", "/cluster/create"): {"401", "403", "404", "409", "422"},
    ("get", "/cluster/list/{org_name}"): {"401", "404", "422"},
    ("post", "/cluster/allocate"): {"401", "403", "404", "409", "422"},
    ("post", "/cluster/release"): {"401", "403", "404", "409", "422"},
    ("patch", "/cluster/resize"): {"401", "403", "404", "409", "422"},
    ("get", "/readyz"): {"503"},
}


def test_openapi_json_describes_every_endpoint(client: TestClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert ENDPOINTS <= documented


@pytest.mark.parametrize(("method", "path"), sorted(ERRORS))
def test_openapi_json_documents_each_endpoints_error_codes(
    client: TestClient, method: str, path: str
) -> None:
    operation = client.get("/openapi.json").json()["paths"][path][method]

    assert ERRORS[(method, path)] <= set(operation["responses"])


def test_openapi_json_documents_request_bodies_with_their_bounds(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    create = spec["paths"]["/cluster/create"]["post"]["requestBody"]["content"]
    ref = create["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    cluster = schemas[ref]
    assert set(cluster["required"]) == {
        "name",
        "organization_name",
        "total_cpu",
        "total_ram",
        "total_gpu",
    }
    assert cluster["additionalProperties"] is False
    assert cluster["properties"]["total_gpu"]["maximum"] == 1_000_000
    assert cluster["properties"]["total_gpu"]["minimum"] == 0
    assert cluster["properties"]["name"]["maxLength"] == 63
    login = spec["paths"]["/user/login"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in login


def test_swaggers_authorize_button_logs_in_through_the_password_flow(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    schemes = spec["components"]["securitySchemes"].values()
    flows = [scheme["flows"]["password"] for scheme in schemes if scheme["type"] == "oauth2"]
    assert flows and flows[0]["tokenUrl"].lstrip("/") == "user/login"
    me = spec["paths"]["/user/me"]["get"]
    assert me.get("security"), "authenticated endpoints must name the bearer scheme"
    assert "security" not in spec["paths"]["/user/register"]["post"]


def test_docs_serves_swagger_ui(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "swagger-ui" in response.text.lower()
    assert "/openapi.json" in response.text
