"""Business rules and transactions: who may do what, and what each change does to state.

One module per concern, read in this order: `errors` (what the rules refuse), `access`
(may this caller see or do this), `users`, `organizations`, `clusters`, `deployments` (the
changes a request asks for), `scheduling` (a cluster's pass as the database sees it: load,
decide with `scheduler.py`, apply), `views` (read models: reasons, positions, usage),
`events` (the organization's event feed: pages, and the polls of a live stream).
Routes and the loop use the names exported here.
"""

from services.clusters import (
    create_cluster,
    list_clusters,
    release_capacity,
    reserve_capacity,
    resize_cluster,
)
from services.deployments import (
    cancel_deployment,
    checkpoint_deployment,
    create_deployment,
    list_deployments,
    preview_deployment,
    read_deployment,
    read_queue,
    report_status,
)
from services.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
)
from services.events import EventFeed, EventFollower, StreamEnded, event_feed, read_events
from services.forecasting import refresh_forecasts
from services.organizations import (
    change_role,
    create_organization,
    list_members,
    read_invite_code,
    remove_member,
    rotate_invite_code,
)
from services.scheduling import run_periodic_passes, seconds_to_next_end, transaction
from services.users import (
    KnownUsers,
    authenticate,
    describe_me,
    join_organization,
    register_user,
    user_by_id,
)
from services.views import cluster_gauges

__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "EventFeed",
    "EventFollower",
    "Forbidden",
    "Invalid",
    "KnownUsers",
    "NotFound",
    "StreamEnded",
    "Unauthorized",
    "authenticate",
    "cancel_deployment",
    "change_role",
    "checkpoint_deployment",
    "cluster_gauges",
    "create_cluster",
    "create_deployment",
    "create_organization",
    "describe_me",
    "event_feed",
    "join_organization",
    "list_clusters",
    "list_deployments",
    "list_members",
    "preview_deployment",
    "read_deployment",
    "read_events",
    "read_invite_code",
    "read_queue",
    "refresh_forecasts",
    "register_user",
    "release_capacity",
    "remove_member",
    "report_status",
    "reserve_capacity",
    "resize_cluster",
    "rotate_invite_code",
    "run_periodic_passes",
    "seconds_to_next_end",
    "transaction",
    "user_by_id",
]
