"""Helpers to submit and inspect deployments, so scheduling tests read like SPEC §5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from helpers import create_cluster, create_org, new_user


@dataclass
class Team:
    """An admin with an organization and one cluster in it."""

    client: TestClient
    headers: dict[str, str]
    org: str
    cluster: str

    def deploy(
        self, gpu: int = 0, cpu: int = 1, ram: int = 1, priority: int = 0, **extra: Any
    ) -> dict[str, Any]:
        response = self.client.post(
            "/deployment/create",
            json=self.body(gpu, cpu, ram, priority, **extra),
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def body(
        self, gpu: int = 0, cpu: int = 1, ram: int = 1, priority: int = 0, **extra: Any
    ) -> dict[str, Any]:
        return {
            "cluster_name": self.cluster,
            "organization_name": self.org,
            "docker_image": "ghcr.io/acme/model:1.0",
            "required_cpu": cpu,
            "required_ram": ram,
            "required_gpu": gpu,
            "priority": priority,
            **extra,
        }

    def get(self, deployment: dict[str, Any] | int) -> dict[str, Any]:
        deployment_id = deployment if isinstance(deployment, int) else deployment["id"]
        response = self.client.get(f"/deployment/{deployment_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def status(self, deployment: dict[str, Any] | int) -> str:
        return str(self.get(deployment)["status"])

    def cancel(self, deployment: dict[str, Any]) -> dict[str, Any]:
        response = self.client.delete(
            f"/deployment/delete/{deployment['id']}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def report(
        self, deployment: dict[str, Any], status: str, message: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if message is not None:
            body["message"] = message
        response = self.client.post(
            f"/deployment/{deployment['id']}/status", json=body, headers=self.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def queue(self) -> list[dict[str, Any]]:
        response = self.client.get(f"/deployment/queue/{self.cluster}", headers=self.headers)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["queue"]
        return entries

    def cluster_state(self) -> dict[str, Any]:
        response = self.client.get(f"/cluster/list/{self.org}", headers=self.headers)
        assert response.status_code == 200, response.text
        (cluster,) = [c for c in response.json()["clusters"] if c["name"] == self.cluster]
        result: dict[str, Any] = cluster
        return result


def make_team(client: TestClient, cpu: int = 64, ram: int = 256, gpu: int = 4) -> Team:
    headers = new_user(client)
    org = create_org(client, headers)["name"]
    cluster = create_cluster(client, headers, org, cpu=cpu, ram=ram, gpu=gpu)["name"]
    return Team(client, headers, org, cluster)
