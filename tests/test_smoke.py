from fastapi.testclient import TestClient

from helpers import create_cluster, create_org, new_user


def test_a_new_admin_creates_a_cluster_and_sees_it_listed(client: TestClient) -> None:
    admin = new_user(client)
    org = create_org(client, admin)["name"]

    cluster = create_cluster(client, admin, org, gpu=4)

    listed = client.get(f"/cluster/list/{org}", headers=admin).json()
    assert listed["clusters"] == [cluster]
    assert cluster["available_gpu"] == 4 and cluster["allocated_gpu"] == 0
