"""The README as a newcomer uses it: its walkthrough runs as printed against a real server
and shows what the product is for; its links, and those of docs/, lead somewhere."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
from live_server import ROOT, LiveServer, require_commands
from openapi_walk import send_every_example

README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
WALKTHROUGH_API = "API=http://127.0.0.1:8000"


def walkthrough_script() -> str:
    """The ```sh block right under the README's "Walkthrough with curl" heading, verbatim."""
    text = README.read_text()
    section = text.split("\n## Walkthrough with curl\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, "no ```sh block under the walkthrough heading"
    return match.group(1)


def _answers(output: str) -> list[Any]:
    """Every JSON answer the script printed, in order (one per line)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_walkthrough_runs_as_printed_and_shows_a_preemption_and_a_restart(
    tmp_path: Path,
) -> None:
    require_commands("bash", "curl", "python3")
    script = walkthrough_script()
    assert script.count(WALKTHROUGH_API) == 1

    with LiveServer(tmp_path) as server:
        run = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script.replace(WALKTHROUGH_API, f"API={server.url}"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = run.stdout + run.stderr  # `tee /dev/stderr` shows the creates there
        assert run.returncode == 0, output
        with httpx.Client(base_url=server.url, timeout=30) as client:
            examples = send_every_example(client)

    creates, answers = _answers(run.stderr), _answers(run.stdout)
    assert not [a for a in creates + answers if "detail" in a], output  # no error anywhere
    created = {a["name"]: a for a in creates}
    assert len(creates) == len(created) == 3, output
    reserved = next(a for a in answers if a.get("reserved_gpu") == 2)
    queues = [a["queue"] for a in answers if "queue" in a]
    (training,) = [a for a in answers if "events" in a]
    clusters = [a for a in answers if "clusters" in a]

    # Reserved capacity counts as allocated, with nothing running.
    assert (reserved["allocated_gpu"], reserved["available_gpu"], reserved["running"]) == (2, 2, 0)
    train, evaluation, urgent = created["train-llm"], created["eval-llm"], created["hotfix-tune"]
    assert train["status"] == "running"
    assert evaluation["status"] == "pending" and "needs 2 gpu, 0 available" in evaluation["reason"]
    assert urgent["status"] == "running"
    # The queue after the preemption: the training run keeps its place ahead of the evaluation.
    before, after = queues
    assert [(e["deployment_id"], e["position"]) for e in before] == [
        (train["id"], 1),
        (evaluation["id"], 2),
    ]
    assert before[0]["reason"].startswith(f"preempted by deployment {urgent['id']}")
    assert any(a.get("id") == urgent["id"] and a["status"] == "cancelled" for a in answers)
    # After the cancel, the preempted training run runs again; the evaluation is next.
    assert (training["id"], training["status"], training["preemption_count"]) == (
        train["id"],
        "running",
        1,
    )
    assert [e["type"] for e in training["events"]] == [
        "created",
        "started",
        "preempted",
        "requeued",
        "started",
    ]
    assert [(e["deployment_id"], e["position"]) for e in after] == [(evaluation["id"], 1)]
    assert clusters[-1]["clusters"][0]["allocated_gpu"] == 4
    # And every request example of /docs works on what the walkthrough left.
    assert [(m, p, s) for m, p, s, _ in examples if s >= 300] == []


LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)|<(https?://[^>]+)>")


def _anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of a markdown file."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", path.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```$", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [next(group for group in match.groups() if group) for match in LINK.finditer(text)]


def test_every_link_in_the_readme_and_docs_stays_inside_the_repository() -> None:
    broken = []
    for document in DOCUMENTS:
        for link in _links(document):
            if re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", link):
                continue
            target, _, anchor = link.partition("#")
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                broken.append((document.name, link, "not a relative path"))
                continue
            path = (document.parent / target).resolve() if target else document
            if not path.exists() or ROOT not in path.parents:
                broken.append((document.name, link, "no such file in the repository"))
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append((document.name, link, "no such heading"))
    assert broken == []
    assert sum(len(_links(document)) for document in DOCUMENTS) >= 10  # it did read links


def test_the_readme_keeps_its_two_set_up_commands_and_shows_skip_reasons() -> None:
    text = README.read_text()
    blocks = {
        marker: re.search(rf"<!-- {marker} -->\n```sh\n(.*?)\n```", text, re.DOTALL)
        for marker in ("run-command", "test-command")
    }

    assert all(blocks.values())
    assert text.count("<!-- ") == 2
    test_command = blocks["test-command"].group(1)  # type: ignore[union-attr]
    assert test_command.endswith(".venv/bin/python -m pytest -rs")
