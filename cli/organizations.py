"""`hv org ...` and `hv cluster ...`: teams, their members and their capacity."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli import render
from cli.common import (
    CpuOption,
    Format,
    GpuOption,
    OrgOption,
    OutputOption,
    RamOption,
    Role,
    connect,
    console,
    note,
    organization,
    say,
)

org_app = typer.Typer(help="Organizations: create, list, members, invite codes, roles.")
cluster_app = typer.Typer(help="Clusters: create, list, reserve and release capacity, resize.")

OrgArgument = Annotated[str, typer.Argument(help="Organization name", show_default=False)]
ClusterArgument = Annotated[str, typer.Argument(help="Cluster name", show_default=False)]


@org_app.command("create")
def org_create(name: OrgArgument, output: OutputOption = Format.table) -> None:
    """Create an organization; you become its admin."""
    with connect() as api:
        created = api.post("/organization/create", {"name": name})
    if output is Format.json:
        render.write_json(created)
        return
    expires = render.timestamp(created["invite_expires_at"])
    say(
        f"organization {created['name']} created; invite code {created['invite_code']} "
        f"(joins as {created['invite_role']}, expires {expires} UTC)"
    )


@org_app.command("ls")
def org_ls(output: OutputOption = Format.table) -> None:
    """List your organizations and your role in each."""
    with connect() as api:
        me = api.get("/user/me")
    if output is Format.json:
        render.write_json(me["organizations"])
        return
    console.print(render.organizations_table(me["organizations"]))


@org_app.command("members")
def org_members(org: OrgArgument, output: OutputOption = Format.table) -> None:
    """List an organization's members and their roles."""
    with connect() as api:
        members = api.get(f"/organization/list-users/{org}")
    if output is Format.json:
        render.write_json(members)
        return
    console.print(render.members_table(members["users"]))


@org_app.command("invite")
def org_invite(
    org: OrgArgument,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Issue a new code; the old one stops working")
    ] = False,
    role: Annotated[
        Role | None, typer.Option("--role", help="Role the new code grants", show_default=False)
    ] = None,
    hours: Annotated[
        int | None,
        typer.Option(
            "--hours", min=1, max=720, help="Lifetime of the new code", show_default=False
        ),
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Show the invite code (admins), or issue a new one with --rotate."""
    if not rotate and (role is not None or hours is not None):
        raise typer.BadParameter("--role and --hours apply to a new code: add --rotate")
    with connect() as api:
        if rotate:
            body: dict[str, Any] = {}
            if role is not None:
                body["role"] = role.value
            if hours is not None:
                body["expires_in_hours"] = hours
            code = api.post(f"/organization/{org}/invite-code/rotate", body)
        else:
            code = api.get(f"/organization/get-invite-code/{org}")
    if output is Format.json:
        render.write_json(code)
        return
    say(code["invite_code"])
    note(f"joins {org} as {code['role']}; expires {render.timestamp(code['expires_at'])} UTC")


@org_app.command("join")
def org_join(
    code: Annotated[
        str,
        typer.Argument(
            help="Invite code (one that starts with '-' goes after '--')", show_default=False
        ),
    ],
    output: OutputOption = Format.table,
) -> None:
    """Join an organization with its invite code."""
    with connect() as api:
        joined = api.post("/user/join", {"invite_code": code})
    if output is Format.json:
        render.write_json(joined)
        return
    say(f"joined {joined['organization']} as {joined['role']}")


@org_app.command("role")
def org_role(
    org: OrgArgument,
    username: Annotated[str, typer.Argument(help="Member", show_default=False)],
    role: Annotated[Role, typer.Argument(help="New role", show_default=False)],
    output: OutputOption = Format.table,
) -> None:
    """Change a member's role (admins)."""
    with connect() as api:
        member = api.request(
            "PUT", f"/organization/{org}/members/{username}", json_body={"role": role.value}
        )
    if output is Format.json:
        render.write_json(member)
        return
    say(f"{member['username']} is now {member['role']} in {org}")


@org_app.command("remove")
def org_remove(
    org: OrgArgument,
    username: Annotated[str, typer.Argument(help="Member (yourself to leave)", show_default=False)],
) -> None:
    """Remove a member (admins), or leave by naming yourself."""
    with connect() as api:
        api.request("DELETE", f"/organization/{org}/members/{username}")
    say(f"{username} is no longer a member of {org}")


def _show_cluster(cluster: dict[str, Any], output: Format) -> None:
    if output is Format.json:
        render.write_json(cluster)
    else:
        say(render.cluster_summary(cluster))


@cluster_app.command("create")
def cluster_create(
    name: ClusterArgument,
    cpu: CpuOption = 0,
    ram: RamOption = 0,
    gpu: GpuOption = 0,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Create a cluster of fixed capacity (admins)."""
    with connect() as api:
        body = {
            "name": name,
            "organization_name": organization(api, org),
            "total_cpu": cpu,
            "total_ram": ram,
            "total_gpu": gpu,
        }
        cluster = api.post("/cluster/create", body)
    _show_cluster(cluster, output)


@cluster_app.command("ls")
def cluster_ls(org: OrgOption = None, output: OutputOption = Format.table) -> None:
    """List an organization's clusters: allocated/total per resource, reserved, counts."""
    with connect() as api:
        listing = api.get(f"/cluster/list/{organization(api, org)}")
    if output is Format.json:
        render.write_json(listing)
        return
    console.print(render.clusters_table(listing["clusters"]))


def _reservation(path: str, name: str, cpu: int, ram: int, gpu: int, org: str | None) -> Any:
    with connect() as api:
        body = {
            "cluster_name": name,
            "organization_name": organization(api, org),
            "cpu": cpu,
            "ram": ram,
            "gpu": gpu,
        }
        return api.post(path, body)


@cluster_app.command("reserve")
def cluster_reserve(
    name: ClusterArgument,
    cpu: CpuOption = 0,
    ram: RamOption = 0,
    gpu: GpuOption = 0,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Hold capacity outside any deployment (maintenance, a team's hold)."""
    _show_cluster(_reservation("/cluster/allocate", name, cpu, ram, gpu, org), output)


@cluster_app.command("release")
def cluster_release(
    name: ClusterArgument,
    cpu: CpuOption = 0,
    ram: RamOption = 0,
    gpu: GpuOption = 0,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Give reserved capacity back; the queue is scheduled at once."""
    _show_cluster(_reservation("/cluster/release", name, cpu, ram, gpu, org), output)


@cluster_app.command("resize")
def cluster_resize(
    name: ClusterArgument,
    cpu: Annotated[
        int | None, typer.Option("--cpu", min=0, help="New total cores", show_default="unchanged")
    ] = None,
    ram: Annotated[
        int | None, typer.Option("--ram", min=0, help="New total GiB", show_default="unchanged")
    ] = None,
    gpu: Annotated[
        int | None, typer.Option("--gpu", min=0, help="New total devices", show_default="unchanged")
    ] = None,
    org: OrgOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Change a cluster's totals (admins); a resource not given keeps its total."""
    if cpu is None and ram is None and gpu is None:
        raise typer.BadParameter("give at least one of --cpu, --ram, --gpu")
    with connect() as api:
        org_name = organization(api, org)
        clusters = api.get(f"/cluster/list/{org_name}")["clusters"]
        # The API wants all three totals; the ones not given are read from the cluster.
        current = next((c for c in clusters if c["name"].lower() == name.lower()), None)
        totals = {
            "total_cpu": cpu if cpu is not None else (current or {}).get("total_cpu", 0),
            "total_ram": ram if ram is not None else (current or {}).get("total_ram", 0),
            "total_gpu": gpu if gpu is not None else (current or {}).get("total_gpu", 0),
        }
        body = {"cluster_name": name, "organization_name": org_name, **totals}
        cluster = api.request("PATCH", "/cluster/resize", json_body=body)
    _show_cluster(cluster, output)
