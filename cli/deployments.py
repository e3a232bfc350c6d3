"""`hv run`, `ps`, `queue`, `show`, `cancel`, `checkpoint`, `report`: deployments and the
queue they wait in."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import live, render
from cli.client import Api, HvError
from cli.common import (
    CpuOption,
    Format,
    GpuOption,
    OrgOption,
    Outcome,
    OutputOption,
    RamOption,
    Status,
    connect,
    console,
    now,
    organization,
    say,
)

PAGE = 1000  # the API's largest page

ClusterArgument = Annotated[str, typer.Argument(help="Cluster name", show_default=False)]
IdArgument = Annotated[int, typer.Argument(min=1, help="Deployment id", show_default=False)]
MessageOption = Annotated[
    str | None, typer.Option("--message", "-m", help="Said in the event", show_default=False)
]
ClusterOrgOption = Annotated[
    str | None,
    typer.Option(
        "--org",
        envvar="HV_ORG",
        help="Organization of the cluster, when several of yours have one of that name",
        show_default=False,
    ),
]


def run(
    cluster: ClusterArgument,
    image: Annotated[str, typer.Argument(help="Docker image reference", show_default=False)],
    cpu: CpuOption = 0,
    ram: RamOption = 0,
    gpu: GpuOption = 0,
    priority: Annotated[int, typer.Option(min=0, max=1000, help="Higher runs first")] = 0,
    name: Annotated[str | None, typer.Option(help="A label", show_default=False)] = None,
    after: Annotated[
        list[int] | None,
        typer.Option("--after", min=1, help="Start only once deployment ID completed (repeatable)"),
    ] = None,
    duration: Annotated[
        int | None,
        typer.Option(min=1, help="Seconds of run time; unset runs until cancelled or reported"),
    ] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="Say what a submit would do; submit nothing")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow its events until it starts (or ends)")
    ] = False,
    until_done: Annotated[
        bool, typer.Option("--until-done", help="With --wait: follow it until it ends")
    ] = False,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Submit a deployment to a cluster; it starts at once or waits in the queue.

    With --wait, exit status 1 when it ends failed or cancelled."""
    if preview and (wait or until_done):
        raise typer.BadParameter("--preview submits nothing, so there is nothing to wait for")
    with connect() as api:
        body: dict[str, Any] = {
            "cluster_name": cluster,
            "organization_name": organization(api, org),
            "docker_image": image,
            "required_cpu": cpu,
            "required_ram": ram,
            "required_gpu": gpu,
            "priority": priority,
            "depends_on": after or [],
            "duration_seconds": duration,
        }
        if name is not None:
            body["name"] = name
        if preview:
            answer = api.post("/deployment/preview", body)
            if output is Format.json:
                render.write_json(answer)
            else:
                say(render.preview_summary(answer, now()))
            return
        created = api.post("/deployment/create", body)
        if not (wait or until_done):
            if output is Format.json:
                render.write_json(created)
            else:
                say(render.created_summary(created, now()))
            return
        if output is Format.json:
            render.write_json_line(created)
        else:
            say(render.created_summary(created, now()))
        ended = live.follow_deployment(api, created, until_done=until_done, output=output)
    if ended in ("failed", "cancelled"):
        raise typer.Exit(1)


def list_deployments(api: Api, cluster: str, org: str | None, status: Status | None) -> list[Any]:
    """Every deployment of the cluster (optionally of one status), page after page."""
    found: list[Any] = []
    after = 0
    while True:
        page = api.get(
            f"/deployment/list/{cluster}",
            organization_name=org,
            status=status.value if status else None,
            after=after,
            limit=PAGE,
        )
        found.extend(page["deployments"])
        if page["next_after"] is None:
            return found
        after = page["next_after"]


def ps(
    cluster: Annotated[
        str | None,
        typer.Argument(help="Cluster name (default: every cluster of --org)", show_default=False),
    ] = None,
    status: Annotated[
        Status | None, typer.Option(help="Only deployments in this state", show_default=False)
    ] = None,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """List deployments, of one cluster or of every cluster of an organization."""
    with connect() as api:
        if cluster is not None:
            deployments = list_deployments(api, cluster, org, status)
            data: dict[str, Any] = {"cluster_name": cluster, "deployments": deployments}
        else:
            org_name = organization(api, org)
            clusters = api.get(f"/cluster/list/{org_name}")["clusters"]
            deployments = [
                d for c in clusters for d in list_deployments(api, c["name"], org_name, status)
            ]
            data = {"organization_name": org_name, "deployments": deployments}
    if output is Format.json:
        render.write_json(data)
    else:
        console.print(render.deployments_table(deployments, now()))


def read_queue(api: Api, cluster: str, org: str | None) -> dict[str, Any]:
    """The whole queue in scheduling order, page after page (`total` says how many)."""
    entries: list[Any] = []
    while True:
        page: dict[str, Any] = api.get(
            f"/deployment/queue/{cluster}", organization_name=org, offset=len(entries), limit=PAGE
        )
        entries.extend(page["queue"])
        if not page["queue"] or len(entries) >= page["total"]:
            return {**page, "queue": entries}


def _organization_of(api: Api, cluster: str) -> str:
    """Which of the caller's organizations owns the cluster, for its event stream (the
    queue answered for it, so exactly one does, or the API would have asked for --org)."""
    me = api.get("/user/me")
    for membership in me["organizations"]:
        clusters = api.get(f"/cluster/list/{membership['name']}")["clusters"]
        if any(c["name"].lower() == cluster.lower() for c in clusters):
            return str(membership["name"])
    raise HvError(f"cluster '{cluster}' is in none of your organizations")


def queue(
    cluster: ClusterArgument,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw on every change, until Ctrl-C")
    ] = False,
    org: ClusterOrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Show a cluster's queue: position, id, name, priority, waiting, reason, estimated start."""
    with connect() as api:
        current = read_queue(api, cluster, org)
        if watch:
            org_name = org or _organization_of(api, cluster)
            reload = lambda: read_queue(api, cluster, org)  # noqa: E731
            live.watch_queue(api, org_name, cluster, current, reload, output)
            return
    if output is Format.json:
        render.write_json(current)
    else:
        console.print(render.queue_table(current, now(), title=render.queue_title(current)))


def show(deployment_id: IdArgument, output: OutputOption = Format.table) -> None:
    """Show a deployment and its events."""
    with connect() as api:
        detail = api.get(f"/deployment/{deployment_id}")
    if output is Format.json:
        render.write_json(detail)
    else:
        console.print(render.deployment_detail(detail, now()))


def _changed(deployment: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        render.write_json(deployment)
    else:
        reason = f": {deployment['reason']}" if deployment["reason"] else ""
        say(f"deployment {deployment['id']} is {deployment['status']}{reason}")


def cancel(deployment_id: IdArgument, output: OutputOption = Format.table) -> None:
    """Cancel a pending or running deployment; its resources go to the queue."""
    with connect() as api:
        cancelled = api.request("DELETE", f"/deployment/delete/{deployment_id}")
    _changed(cancelled, output)


def checkpoint(
    deployment_id: IdArgument, message: MessageOption = None, output: OutputOption = Format.table
) -> None:
    """Report that a running deployment's work so far is saved."""
    body = {"message": message} if message is not None else {}
    with connect() as api:
        saved = api.post(f"/deployment/{deployment_id}/checkpoint", body)
    if output is Format.json:
        render.write_json(saved)
    else:
        say(
            f"deployment {saved['id']} checkpointed: "
            f"{render.span(saved['saved_seconds'])} of work saved"
        )


def report(
    deployment_id: IdArgument,
    outcome: Annotated[Outcome, typer.Argument(help="How it ended", show_default=False)],
    message: MessageOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Report that a running deployment completed or failed (as its runtime would)."""
    body: dict[str, Any] = {"status": outcome.value}
    if message is not None:
        body["message"] = message
    with connect() as api:
        ended = api.post(f"/deployment/{deployment_id}/status", body)
    _changed(ended, output)
