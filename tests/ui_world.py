"""People and clusters set up through the HTTP API of a live server, for the dashboard's
browser tests and `docs/screenshot.py`; and logging in through the dashboard's own form."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

PASSWORD = "correct horse battery"


@dataclass
class Person:
    """A user with a bearer token, talking to the API as `hv` or curl would."""

    url: str
    username: str
    token: str = ""
    client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @classmethod
    def register(cls, url: str, username: str) -> Person:
        person = cls(url, username)
        credentials = {"username": username, "password": PASSWORD}
        person.client.post("/user/register", json=credentials).raise_for_status()
        answer = person.client.post("/user/login", data=credentials)
        answer.raise_for_status()
        person.token = answer.json()["access_token"]
        return person

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        answer = self.client.request(method, path, headers=headers, **kwargs)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def create_org(self, name: str) -> None:
        self.call("POST", "/organization/create", json={"name": name})

    def invite(self, org: str, role: str) -> str:
        body = {"role": role}
        code: str = self.call("POST", f"/organization/{org}/invite-code/rotate", json=body)[
            "invite_code"
        ]
        return code

    def join(self, code: str) -> None:
        self.call("POST", "/user/join", json={"invite_code": code})

    def create_cluster(self, org: str, name: str, cpu: int, ram: int, gpu: int) -> None:
        body = {
            "name": name,
            "organization_name": org,
            "total_cpu": cpu,
            "total_ram": ram,
            "total_gpu": gpu,
        }
        self.call("POST", "/cluster/create", json=body)

    def reserve(self, org: str, cluster: str, cpu: int = 0, ram: int = 0, gpu: int = 0) -> None:
        body = {"cluster_name": cluster, "organization_name": org, "cpu": cpu, "ram": ram}
        self.call("POST", "/cluster/allocate", json={**body, "gpu": gpu})

    def deploy(self, org: str, cluster: str, **fields: Any) -> dict[str, Any]:
        body = {
            "cluster_name": cluster,
            "organization_name": org,
            "docker_image": "ghcr.io/acme/train:1.0",
            "required_cpu": 1,
            "required_ram": 1,
            "required_gpu": 0,
            **fields,
        }
        created: dict[str, Any] = self.call("POST", "/deployment/create", json=body)
        return created

    def cancel(self, deployment_id: int) -> None:
        self.call("DELETE", f"/deployment/delete/{deployment_id}")

    def get(self, deployment_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/deployment/{deployment_id}")
        return found


def log_in(page: Any, url: str, username: str, then: str = "/ui/") -> None:
    """Log in through the dashboard's form, as a person does, and land on `then`."""
    page.goto(f"{url}{then}")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("button[type=submit]", has_text="Log in").click()
    page.wait_for_url(f"{url}{then}")


def seed_acme(url: str, pause: float = 1.0) -> dict[str, Any]:
    """acme-ml as the screenshots show it: an 8-GPU cluster with a reservation, work that
    ran, work that was preempted by an urgent job, and a queue with reasons and estimates;
    `pause` seconds between the steps, so the timeline has some length. Only
    `docs/screenshot.py` calls it, against a real server whose clock is the wall clock:
    the pauses are the picture's time axis, and no test waits on them."""
    alice = Person.register(url, "alice")
    bob = Person.register(url, "bob")
    alice.create_org("acme-ml")
    bob.join(alice.invite("acme-ml", "developer"))
    alice.create_cluster("acme-ml", "gpu-a", cpu=64, ram=512, gpu=8)
    alice.create_cluster("acme-ml", "cpu-pool", cpu=128, ram=1024, gpu=0)
    alice.reserve("acme-ml", "gpu-a", cpu=4, ram=32, gpu=1)

    def deploy(person: Person, **fields: Any) -> dict[str, Any]:
        return person.deploy("acme-ml", "gpu-a", **fields)

    ids: dict[str, int] = {}
    ids["smoke"] = deploy(bob, name="smoke-test", required_gpu=1, duration_seconds=2)["id"]
    time.sleep(pause)
    big = {"required_cpu": 16, "required_ram": 128, "required_gpu": 4}
    ids["train"] = deploy(bob, name="train-llm", priority=1, duration_seconds=7200, **big)["id"]
    ids["eval"] = deploy(
        bob, name="eval-llm", priority=1, required_gpu=2, required_cpu=8, duration_seconds=3
    )["id"]
    time.sleep(pause)
    ids["notebook"] = deploy(alice, name="notebook", required_gpu=1, required_cpu=2)["id"]
    time.sleep(pause)
    ids["hotfix"] = deploy(
        alice,
        name="hotfix-tune",
        priority=9,
        docker_image="ghcr.io/acme/tune:2.3",
        duration_seconds=1800,
        **big,
    )["id"]
    time.sleep(pause)
    for name in ("sweep-a", "sweep-b"):
        ids[name] = deploy(bob, name=name, required_gpu=2, duration_seconds=900)["id"]
    ids["after"] = deploy(
        bob, name="report", required_cpu=2, depends_on=[ids["sweep-a"]], duration_seconds=60
    )["id"]
    time.sleep(2 * pause)
    bob.cancel(ids["notebook"])
    time.sleep(pause)
    for name in ("alpha", "beta"):
        cpu_job = {"required_cpu": 16, "required_ram": 64, "duration_seconds": 3600}
        alice.deploy("acme-ml", "cpu-pool", name=f"etl-{name}", **cpu_job)
    return {"alice": alice, "bob": bob, "ids": ids}
