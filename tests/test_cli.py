"""`hv` the way people use it: the installed command, as a subprocess, against a real
server process (SPEC §8), with its credentials in a config directory of the test's own;
`--watch` under a pseudo-terminal. Then the pure parts: credentials, refusals, rendering,
the event stream's resume."""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from live_server import LiveServer, free_port
from rich.console import Console

from cli import client as hv_client
from cli import credentials, deployments, render
from cli.client import Api, ApiError, describe_refusal

HV = Path(sys.executable).parent / "hv"
PASSWORD = "correct horse battery"
BOUND = 15.0  # seconds any wait on a real process may take before the test fails
SSE_TYPE = {"Content-Type": "text/event-stream"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_names = iter(range(1, 10_000))


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not HV.exists():
        pytest.fail(f"{HV} is not installed: .venv/bin/pip install -r requirements.txt")
    with LiveServer(tmp_path_factory.mktemp("hv-server")) as live:
        yield live


class Person:
    """A registered user at a terminal: `hv` with a config directory of their own."""

    def __init__(self, server: LiveServer, home: Path) -> None:
        self.server = server
        self.username = unique("user")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HV_")},
            "XDG_CONFIG_HOME": str(home),
            "COLUMNS": "200",
        }
        response = httpx.post(
            f"{server.url}/user/register",
            json={"username": self.username, "password": PASSWORD},
            timeout=BOUND,
        )
        assert response.status_code == 201, response.text

    def hv(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `hv`; whatever happens, it never prints a traceback."""
        done = subprocess.run(
            [str(HV), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=BOUND * 2,
            check=False,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def ok(self, *args: str, input: str | None = None) -> str:
        done = self.hv(*args, input=input)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def login(self) -> None:
        self.ok(
            "login",
            "--url",
            self.server.url,
            "--username",
            self.username,
            "--password-stdin",
            input=PASSWORD + "\n",
        )

    def api(self) -> httpx.Client:
        """The same account through the API directly, as another program would use it."""
        response = httpx.post(
            f"{self.server.url}/user/login",
            data={"username": self.username, "password": PASSWORD},
            timeout=BOUND,
        )
        token = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=BOUND)


@pytest.fixture
def alice(server: LiveServer, tmp_path: Path) -> Person:
    person = Person(server, tmp_path / "alice-config")
    person.login()
    return person


def team(person: Person, gpu: int = 4) -> tuple[str, str]:
    """An organization and a cluster of `gpu` GPUs (and plenty of cpu and ram), by `hv`."""
    org, cluster = unique("org"), unique("gpu")
    person.ok("org", "create", org)
    person.ok("cluster", "create", cluster, "--cpu", "64", "--ram", "512", "--gpu", str(gpu))
    return org, cluster


def test_login_reads_the_password_from_stdin_and_keeps_the_token_readable_by_its_owner_only(
    server: LiveServer, tmp_path: Path
) -> None:
    person = Person(server, tmp_path / "config")

    person.login()

    path = tmp_path / "config" / "hypervisor" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert (stored["url"], stored["username"]) == (server.url, person.username)
    assert stored["token"].count(".") == 2  # a JWT
    assert person.json("whoami")["username"] == person.username
    # HV_TOKEN overrides the file: a wrong one is refused with the API's words, exit 1.
    refused = person.hv("whoami", HV_TOKEN="not-a-token")
    assert refused.returncode == 1
    assert "invalid or expired token" in refused.stderr and "hv login" in refused.stderr

    assert person.ok("logout").strip() == "logged out"
    assert not path.exists()
    after = person.hv("whoami")
    assert after.returncode == 1 and "not logged in" in after.stderr


def test_a_wrong_password_is_the_apis_refusal_and_nothing_is_stored(
    server: LiveServer, tmp_path: Path
) -> None:
    person = Person(server, tmp_path / "config")

    done = person.hv(
        "login", "--url", server.url, "-u", person.username, "--password-stdin", input="wrong\n"
    )

    assert done.returncode == 1
    assert "incorrect username or password" in done.stderr
    assert not (tmp_path / "config" / "hypervisor" / "credentials.json").exists()


def test_run_wait_follows_a_deployment_to_its_start_and_the_queue_shows_who_waits(
    alice: Person,
) -> None:
    _org, cluster = team(alice, gpu=4)

    started = alice.ok(
        "run", cluster, "ghcr.io/acme/train:1.0", "--gpu", "4", "--priority", "1",
        "--name", "train", "--wait",
    )  # fmt: skip
    (train,) = alice.json("ps", cluster)["deployments"]
    first = alice.json("run", cluster, "ghcr.io/acme/eval:1.0", "--gpu", "2", "--name", "eval")
    second = alice.json("run", cluster, "nginx:1.27", "--gpu", "3")
    queue = alice.json("queue", cluster)

    assert f"deployment {train['id']} (train) on {cluster} is running" in started
    assert "created: submitted by" in started and "started: started" in started
    assert train["status"] == "running"
    assert (first["status"], second["status"]) == ("pending", "pending")
    assert queue["total"] == 2
    assert [(e["position"], e["deployment_id"]) for e in queue["queue"]] == [
        (1, first["id"]),
        (2, second["id"]),
    ]
    assert queue["queue"][0]["reason"].startswith("needs 2 gpu, 0 available")
    table = alice.ok("queue", cluster)
    assert re.search(rf"^1\s+{first['id']}\s+eval\s+0\s+", table, re.MULTILINE), table

    cancelled = alice.ok("cancel", str(train["id"]))

    assert f"deployment {train['id']} is cancelled" in cancelled
    # Its 4 GPUs go to the queue: the first waiter starts, the second still waits.
    with alice.api() as api:
        assert api.get(f"/deployment/{first['id']}").json()["status"] == "running"
        queue = api.get(f"/deployment/queue/{cluster}").json()
        assert [e["deployment_id"] for e in queue["queue"]] == [second["id"]]
        events = api.get(f"/deployment/{train['id']}").json()["events"]
    assert [e["type"] for e in events] == ["created", "started", "cancelled"]
    shown = alice.ok("show", str(train["id"]))
    assert re.search(r"^status\s+cancelled\s*$", shown, re.MULTILINE), shown
    assert re.search(r"cancelled\s+cancelled by " + alice.username, shown), shown


def test_run_wait_until_done_follows_a_timed_deployment_to_its_end(alice: Person) -> None:
    _org, cluster = team(alice)
    began = time.monotonic()

    done = alice.hv(
        "run", cluster, "nginx", "--cpu", "1", "--duration", "1", "--wait", "--until-done"
    )

    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began >= 1
    kinds = re.findall(r"deployment \d+  (\w+):", done.stdout)
    assert kinds == ["created", "started", "completed"]


def interruptible() -> None:
    """Run in a child before `hv` starts: Ctrl-C (SIGINT) at its default. A test runner
    started as a background job of a shell without job control inherits SIGINT ignored,
    and Python then keeps ignoring it, so the tests' Ctrl-C would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def rest_of_output(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What a process still writes until it exits, read through the same buffered streams
    that `readline` used (`communicate` would skip what they already buffered)."""
    watchdog = threading.Timer(BOUND, process.kill)
    watchdog.start()
    try:
        out = process.stdout.read()
        err = process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
    return out, err


def test_run_wait_exits_1_when_the_deployment_ends_failed(alice: Person) -> None:
    _org, cluster = team(alice)
    waiting = subprocess.Popen(
        [str(HV), "run", cluster, "nginx", "--cpu", "1", "--until-done", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=alice.env,
    )
    created = json.loads(waiting.stdout.readline())

    with alice.api() as api:
        answer = api.post(f"/deployment/{created['id']}/status", json={"status": "failed"})
        assert answer.status_code == 200, answer.text
    out, err = rest_of_output(waiting)

    assert waiting.returncode == 1, err
    assert "Traceback" not in out + err
    # JSON Lines: the create's answer, then each event as it came.
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert kinds == ["created", "started", "failed"], (out, err)


def test_the_apis_refusals_exit_1_with_their_detail(alice: Person, server: LiveServer) -> None:
    _org, cluster = team(alice)
    created = alice.json("run", cluster, "nginx", "--cpu", "1")
    alice.ok("cancel", str(created["id"]))

    again = alice.hv("cancel", str(created["id"]))
    invalid = alice.hv("run", cluster, "Not An Image!", "--gpu", "1")
    too_big = alice.hv("run", cluster, "nginx", "--gpu", "9")
    foreign = alice.hv("org", "members", "no-such-org")

    assert again.returncode == 1
    assert again.stderr == f"error: deployment {created['id']} is already cancelled\n"
    # A 422's validation list, one problem a line, by field.
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("error: the request does not validate:\n  docker_image: ")
    assert too_big.returncode == 1 and "could never run: 9 gpu requested, 4 in total" in (
        too_big.stderr
    )
    assert foreign.returncode == 1 and "not found" in foreign.stderr
    assert "" == again.stdout == invalid.stdout == foreign.stdout


def test_usage_errors_exit_2(alice: Person) -> None:
    missing = alice.hv("run")
    negative = alice.hv("run", "gpu-a", "nginx", "--gpu", "-1")
    unknown = alice.hv("deploy")
    stdin_without_user = alice.hv("login", "--password-stdin", input=PASSWORD)

    assert [missing.returncode, negative.returncode, unknown.returncode] == [2, 2, 2]
    assert stdin_without_user.returncode == 2
    assert "--gpu" in negative.stderr
    assert "--username" in stdin_without_user.stderr


def test_an_unreachable_server_is_named_and_exits_1(alice: Person) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    # A token of its own: the stored one is for the server alice logged in to, not this one.
    listing = alice.hv("ps", HV_URL=closed, HV_TOKEN="a-token")
    login = alice.hv("login", "--url", closed, "-u", "someone", "--password-stdin", input=PASSWORD)

    for done in (listing, login):
        assert done.returncode == 1
        assert done.stderr == f"error: could not reach {closed}: connection refused\n"


def test_a_server_address_that_is_no_url_is_a_usage_error_naming_it(alice: Person) -> None:
    for address in ("http://[::1", "not-a-url", "ftp://127.0.0.1"):
        done = alice.hv("ps", HV_URL=address)

        assert done.returncode == 2, address
        assert done.stderr.startswith(f"error: not a server URL: {address!r}"), done.stderr


def test_register_creates_the_account_and_logs_in_as_it(server: LiveServer, tmp_path: Path) -> None:
    person = Person(server, tmp_path / "config")  # registers `person.username` by the API
    newcomer = unique("newcomer")
    args = ("register", "--url", server.url, "-u", newcomer, "--password-stdin")

    first = person.hv(*args, input=PASSWORD + "\n")
    again = person.hv(*args, input=PASSWORD + "\n")

    assert first.returncode == 0, first.stderr
    assert f"registered {newcomer}" in first.stdout
    assert person.json("whoami")["username"] == newcomer
    assert again.returncode == 1 and "taken" in again.stderr.lower(), again.stderr


def test_several_organizations_need_org_and_it_picks_one(alice: Person) -> None:
    first, cluster = team(alice)
    second = unique("org")
    alice.ok("org", "create", second)

    ambiguous = alice.hv("cluster", "ls")
    chosen = alice.json("cluster", "ls", "--org", first)
    by_env = alice.hv("cluster", "ls", "-o", "json", HV_ORG=second)

    assert ambiguous.returncode == 2 and "--org" in ambiguous.stderr
    assert [c["name"] for c in chosen["clusters"]] == [cluster]
    assert json.loads(by_env.stdout) == {"organization_name": second, "clusters": []}


def test_invite_join_role_and_remove(alice: Person, server: LiveServer, tmp_path: Path) -> None:
    org = unique("org")
    alice.ok("org", "create", org)
    bob = Person(server, tmp_path / "bob-config")
    bob.login()

    code = alice.ok("org", "invite", org, "--rotate", "--role", "viewer", "--hours", "2").strip()
    # `--` first: a code may start with "-" (URL-safe base64), which reads as an option.
    joined = bob.ok("org", "join", "--", code)
    viewer_cannot = bob.hv("cluster", "create", "gpu-z", "--gpu", "1", "--org", org)
    promoted = alice.json("org", "role", org, bob.username, "developer")
    alice.ok("org", "remove", org, bob.username)

    assert joined.strip() == f"joined {org} as viewer"
    assert viewer_cannot.returncode == 1 and "admin" in viewer_cannot.stderr
    assert promoted["role"] == "developer"
    assert [m["username"] for m in alice.json("org", "members", org)["users"]] == [alice.username]


def test_events_follow_streams_new_events_until_ctrl_c(alice: Person) -> None:
    org, cluster = team(alice)
    follower = subprocess.Popen(
        [str(HV), "events", org, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=alice.env,
        preexec_fn=interruptible,
    )
    created = alice.json("run", cluster, "nginx", "--cpu", "1", "--name", "web")

    lines = [follower.stdout.readline(), follower.stdout.readline()]
    follower.send_signal(signal.SIGINT)
    out, err = rest_of_output(follower)

    assert f"deployment {created['id']}  created: submitted by {alice.username}" in lines[0]
    assert "started: started" in lines[1]
    assert follower.returncode == 0, err
    assert "Traceback" not in out + err


class Terminal:
    """A process on a pseudo-terminal: what it draws, with escape codes removed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        # A terminal echoes what is typed unless the program turns echo off, as a password
        # prompt must.
        self.process = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
            preexec_fn=interruptible,
        )
        os.close(slave)
        self.raw = b""

    def read_until(self, pattern: str, start: int = 0) -> int:
        """Read until the screen output after character `start` matches; where it ends."""
        deadline = time.monotonic() + BOUND
        while True:
            text = self.text()
            found = re.search(pattern, text[start:])
            if found:
                return start + found.end()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern!r} never appeared in:\n{text[start:]}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:  # the process ended and closed the terminal
                    message = f"{pattern!r} never appeared in:\n{text[start:]}"
                    raise AssertionError(message) from None

    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def finish(self) -> int:
        code = self.process.wait(timeout=BOUND)
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.raw += chunk
        os.close(self.master)
        return code


def test_queue_watch_redraws_in_place_as_deployments_arrive_and_ends_on_ctrl_c(
    alice: Person,
) -> None:
    org, cluster = team(alice, gpu=1)
    screen = Terminal([str(HV), "queue", cluster, "--watch"], {**alice.env, "COLUMNS": "160"})
    try:
        seen = screen.read_until(rf"{cluster}: 0 pending")
        arrived = []
        with alice.api() as api:
            for count in range(1, 4):
                body = {
                    "cluster_name": cluster,
                    "organization_name": org,
                    "docker_image": "nginx",
                    "name": f"job{count}",
                    "required_cpu": 0,
                    "required_ram": 0,
                    "required_gpu": 1,
                }
                arrived.append(api.post("/deployment/create", json=body).json()["id"])
                if count > 1:  # the first runs; the others wait, one more each redraw
                    seen = screen.read_until(rf"{cluster}: {count - 1} pending", seen)
                    seen = screen.read_until(rf"{count - 1}\s+{arrived[-1]}\s+job{count}", seen)
        screen.process.send_signal(signal.SIGINT)
        code = screen.finish()
    finally:
        if screen.process.poll() is None:
            screen.process.kill()

    assert code == 0
    text = screen.text()
    assert "Traceback" not in text
    # Redrawn in place: the cursor moves up over the previous table instead of the screen
    # being cleared (no flicker), and the cursor is shown again on the way out.
    assert b"\x1b[2J" not in screen.raw
    assert re.search(rb"\x1b\[\d*A", screen.raw)
    assert screen.raw.rstrip().endswith(b"\x1b[?25h") or b"\x1b[?25h" in screen.raw[-200:]


def test_login_asks_for_the_password_without_echoing_it(server: LiveServer, tmp_path: Path) -> None:
    person = Person(server, tmp_path / "config")
    secret = "correct horse battery"
    screen = Terminal([str(HV), "login", "--url", server.url, "-u", person.username], person.env)
    try:
        screen.read_until("Password: ")
        os.write(screen.master, (secret + "\n").encode())
        screen.read_until(f"logged in to {re.escape(server.url)} as {person.username}")
        code = screen.finish()
    finally:
        if screen.process.poll() is None:
            screen.process.kill()

    assert code == 0
    assert secret not in screen.text()
    assert (tmp_path / "config" / "hypervisor" / "credentials.json").exists()


# The pure parts.


def test_hv_is_a_client_of_the_api_and_imports_nothing_of_the_service() -> None:
    """STYLE: `cli/` speaks HTTP only, so it works against any replica, never the database."""
    service = {"main", "routes", "services", "models", "schemas", "database", "scheduler"}
    service |= {"forecast", "metrics", "middleware", "utils", "fastapi", "sqlalchemy"}
    imported = set()
    for path in (Path(__file__).resolve().parent.parent / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])

    assert "httpx2" in imported
    assert imported & service == set()


def test_credentials_live_under_xdg_config_home_with_env_overrides(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    saved = credentials.Credentials(url="http://h:1", token="t0k", username="ann")

    path = credentials.save(saved, environ)

    assert path == tmp_path / "hypervisor" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.stored(environ) == saved
    assert credentials.current({**environ, "HV_URL": "http://other:2/", "HV_TOKEN": "env"}) == (
        credentials.Credentials(url="http://other:2", token="env")
    )
    assert credentials.current({**environ, "HV_URL": "http://h:1/"}) == (
        credentials.Credentials(url="http://h:1", token="t0k", username="ann")
    )


def test_the_stored_token_never_goes_to_another_server_named_by_hv_url(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    credentials.save(credentials.Credentials(url="https://hv.internal", token="secret"), environ)

    elsewhere = credentials.current({**environ, "HV_URL": "http://127.0.0.1:9"})

    assert (elsewhere.url, elsewhere.token) == ("http://127.0.0.1:9", "")
    assert credentials.config_dir({"XDG_CONFIG_HOME": ""}) == Path.home() / ".config/hypervisor"
    assert credentials.forget(environ) is True and credentials.forget(environ) is False


def test_a_file_saved_over_a_loose_one_is_0600_and_a_corrupt_one_means_logged_out(
    tmp_path: Path,
) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = credentials.credentials_path(environ)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    path.chmod(0o644)

    assert credentials.stored(environ) == credentials.Credentials()
    credentials.save(credentials.Credentials(token="x"), environ)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind


def test_refusals_read_as_sentences_and_validation_lists_one_problem_a_line() -> None:
    validation = [
        {"loc": ["body", "required_gpu"], "msg": "Input should be >= 0", "type": "x"},
        {"loc": ["query", "limit"], "msg": "too big", "type": "y"},
    ]

    assert describe_refusal(409, "already cancelled") == "already cancelled"
    assert describe_refusal(422, validation) == (
        "the request does not validate:\n  required_gpu: Input should be >= 0\n  limit: too big"
    )
    assert describe_refusal(401, "invalid or expired token").endswith("(run `hv login`)")
    assert describe_refusal(429, "slow down", retry_after="7") == "slow down (retry after 7 s)"


def test_a_non_json_error_page_still_gives_its_status() -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with Api("http://h", "t", transport=httpx.MockTransport(proxy)) as api:
        with pytest.raises(ApiError) as refused:
            api.get("/user/me")

    assert refused.value.status_code == 502
    assert refused.value.message == "the server answered 502 Bad Gateway"


def test_the_event_stream_resumes_after_the_last_event_it_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hv_client.time, "sleep", lambda _seconds: None)
    asked: list[str | None] = []

    def frames(*ids: int) -> bytes:
        return b"".join(
            b': keep-alive\n\nid: %d\nevent: started\ndata: {"id": %d, "type": "started"}\n\n'
            % (i, i)
            for i in ids
        )

    def stream(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("Last-Event-ID"))
        body = frames(3, 4) if len(asked) == 1 else frames(5)
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    with Api("http://h", "t", transport=httpx.MockTransport(stream)) as api:
        events = api.events("acme", after=2, cluster_name="gpu-a")
        seen = [next(events)["id"] for _ in range(3)]

    assert seen == [3, 4, 5]
    assert asked == ["2", "4"]  # the reconnect picked up after the last event seen


def test_a_stream_refused_for_a_passing_reason_after_it_connected_is_reopened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hv_client.time, "sleep", lambda _seconds: None)
    answers = iter(
        [
            httpx.Response(200, content=b'id: 1\ndata: {"id": 1}\n\n', headers=SSE_TYPE),
            httpx.Response(503, json={"detail": "restarting"}),
            httpx.Response(200, content=b'id: 2\ndata: {"id": 2}\n\n', headers=SSE_TYPE),
        ]
    )

    with Api("http://h", "t", transport=httpx.MockTransport(lambda _r: next(answers))) as api:
        events = api.events("acme")
        assert [next(events)["id"], next(events)["id"]] == [1, 2]


def test_an_event_stream_refusal_is_raised_not_retried() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "organization 'acme' not found"})

    with Api("http://h", "t", transport=httpx.MockTransport(gone)) as api:
        with pytest.raises(ApiError, match="organization 'acme' not found"):
            next(api.events("acme"))


def test_times_read_as_spans_and_estimates() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    later = (now + timedelta(minutes=4, seconds=10)).isoformat()

    assert [render.span(s) for s in (0, 45, 185, 7800, 273600)] == [
        "0s",
        "45s",
        "3m 05s",
        "2h 10m",
        "3d 04h",
    ]
    assert render.relative(later, now) == "in 4m 10s"
    assert render.relative("2026-12-01T08:57:00Z", now) == "3m 00s ago"
    assert render.estimate(later, "declared", now) == "in 4m 10s"
    assert render.estimate(later, "history", now) == "~in 4m 10s"
    assert render.estimate(None, "unknown", now) == "unknown"
    assert render.estimate("2026-12-01T08:59:00Z", "declared", now) == "now"


def test_the_queue_table_has_the_columns_of_the_spec() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    queue = {
        "cluster_name": "gpu-a",
        "total": 2,
        "queue": [
            {
                "deployment_id": 7,
                "name": "train",
                "position": 1,
                "priority": 5,
                "reason": "needs 2 gpu, 0 available",
                "waiting_seconds": 65.2,
                "eligible": True,
                "estimated_start_at": "2026-12-01T09:10:00Z",
                "estimate_basis": "declared",
            },
            {
                "deployment_id": 9,
                "name": None,
                "position": 2,
                "priority": 0,
                "reason": "waits for deployment 7",
                "waiting_seconds": 3,
                "eligible": False,
                "estimated_start_at": None,
                "estimate_basis": "unknown",
            },
        ],
    }
    console = Console(record=True, width=160, color_system=None)

    console.print(render.queue_table(queue, now, title=render.queue_title(queue)))

    lines = [line.split() for line in console.export_text().splitlines()]
    assert lines[0] == ["gpu-a:", "2", "pending"]
    assert lines[1] == ["POS", "ID", "NAME", "PRI", "WAITING", "REASON", "EST.", "START"]
    assert lines[2] == ["1", "7", "train", "5", "1m", "05s", "needs", "2", "gpu,", "0",
                        "available", "in", "10m", "00s"]  # fmt: skip
    assert lines[3][:5] == ["2", "9", "-", "0", "3s"] and lines[3][-1] == "unknown"
    assert "(not eligible) waits for deployment 7" in " ".join(lines[3])


def test_ps_and_queue_follow_the_pages_to_the_end() -> None:
    """Pages of two: `next_after` for the deployment list, `offset` and `total` for the
    queue, until everything has been read."""
    ids = list(range(1, 6))
    seen: list[str] = []

    def pages(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.query.decode()))
        query = request.url.params
        if request.url.path == "/deployment/list/gpu-a":
            after = int(query["after"])
            page = [i for i in ids if i > after][:2]
            more = page and page[-1] < ids[-1]
            body = {"cluster_name": "gpu-a", "deployments": [{"id": i} for i in page],
                    "next_after": page[-1] if more else None}  # fmt: skip
        else:
            offset = int(query["offset"])
            entries = [{"deployment_id": i} for i in ids[offset : offset + 2]]
            body = {"cluster_name": "gpu-a", "total": len(ids), "queue": entries}
        return httpx.Response(200, json=body)

    with Api("http://h", "t", transport=httpx.MockTransport(pages)) as api:
        listed = deployments.list_deployments(api, "gpu-a", "acme", None)
        queue = deployments.read_queue(api, "gpu-a", None)

    assert [d["id"] for d in listed] == ids
    assert [e["deployment_id"] for e in queue["queue"]] == ids
    assert queue["total"] == 5
    assert seen == [
        "organization_name=acme&after=0&limit=1000",
        "organization_name=acme&after=2&limit=1000",
        "organization_name=acme&after=4&limit=1000",
        "offset=0&limit=1000",
        "offset=2&limit=1000",
        "offset=4&limit=1000",
    ]
