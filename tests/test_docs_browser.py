"""/docs as a newcomer meets it, in a real browser on a machine without internet: Swagger UI
renders from files the service serves itself, its Authorize dialog asks for a username and a
password and logs in, and the pre-filled example of "Submit a deployment" is accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
from live_server import LiveServer, offline_page, require_browser

import schemas

PASSWORD = "correct horse battery"
# Swagger UI's colour for POST operations, from its stylesheet: the CSS was applied.
SWAGGER_POST_GREEN = "rgb(73, 204, 144)"


def test_docs_render_offline_log_in_with_username_and_password_and_submit_the_example(
    tmp_path: Path,
) -> None:
    require_browser()
    blocked: list[str] = []
    requested: list[str] = []
    page_errors: list[str] = []
    with LiveServer(tmp_path) as server, offline_page(blocked) as page:
        _alice_with_cluster_gpu_a(server.url)
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        page.goto(f"{server.url}/docs")
        create = page.locator(".opblock-summary-path", has_text="/deployment/create")
        create.wait_for()
        operations = page.locator(".opblock-summary-path").all_inner_texts()
        post_colour = page.evaluate(
            "getComputedStyle(document.querySelector('.opblock-post')).borderColor"
        )

        page.locator(".auth-wrapper button.authorize").click()
        dialog = page.locator(".dialog-ux")
        visible = _visible_fields(dialog)
        dialog.locator("#oauth_username").fill("alice")
        dialog.locator("#oauth_password").fill(PASSWORD)
        dialog.locator("button.modal-btn.authorize").click()
        logout = dialog.locator("button.modal-btn", has_text="Logout")
        logout.wait_for()
        dialog.locator("button.modal-btn", has_text="Close").click()

        operation = page.locator("#operations-deployments-create_deployment_deployment_create_post")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        prefilled = json.loads(operation.locator("textarea.body-param__text").input_value())
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table .response .response-col_status").first
        status.wait_for()
        answered = status.inner_text()
        page.screenshot(path=str(tmp_path / "docs.png"))

    assert blocked == []
    assert all(urlsplit(url).hostname == "127.0.0.1" for url in requested), requested
    assert {urlsplit(url).path for url in requested} >= {
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    }
    assert page_errors == []
    assert "/deployment/create" in [text.replace("\u200b", "") for text in operations]
    assert post_colour == SWAGGER_POST_GREEN
    assert visible == ["oauth_username", "oauth_password"]
    assert prefilled == schemas.DeploymentCreate.model_json_schema()["examples"][0]
    assert answered == "201"
    assert (tmp_path / "docs.png").stat().st_size > 0


def _alice_with_cluster_gpu_a(url: str) -> None:
    """alice, admin of acme-ml, which owns gpu-a: what the example submits to."""
    user = {"username": "alice", "password": PASSWORD}
    with httpx.Client(base_url=url) as client:
        client.post("/user/register", json=user).raise_for_status()
        token = client.post("/user/login", data=user).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        client.post("/organization/create", json={"name": "acme-ml"}, headers=headers)
        capacity = {"total_cpu": 32, "total_ram": 256, "total_gpu": 4}
        cluster = {"name": "gpu-a", "organization_name": "acme-ml", **capacity}
        client.post("/cluster/create", json=cluster, headers=headers).raise_for_status()


def _visible_fields(dialog: Any) -> list[str]:
    """The ids of the dialog's inputs and selects a person can see."""
    fields = dialog.locator("input, select")
    fields.first.wait_for()
    return [field.get_attribute("id") for field in fields.all() if field.is_visible()]
