"""Load-and-fault harness: real `python main.py` replicas on one database, many clients.

It starts K replicas (one database, one shared JWT key), sets up organizations, users and
small clusters through the API, drives a realistic mix of deployment traffic from C client
threads, optionally SIGKILLs one replica mid-run and restarts it on the same port, then
stops the replicas, runs one more scheduling pass itself and checks the invariants of
SPEC §5 directly in the database (SQLAlchemy, not the API), together with everything the
clients were told by 2xx answers. It writes a JSON report and exits 1 on any 5xx or
violation.

    .venv/bin/python bench/load.py                       # 2 replicas on a fresh SQLite file
    .venv/bin/python bench/load.py --replicas 1 --out bench/results/load_sqlite.json
    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE hv_load_x"
    .venv/bin/python bench/load.py --database-url \\
        postgresql+psycopg://postgres@127.0.0.1:5432/hv_load_x --kill-after 2000

Network traffic goes to 127.0.0.1 only. Every loop is bounded in count and time.

Modules, in the order of a run: `cli` (options, the run), `replicas` (server processes),
`world` (the set-up and what clients learned), `traffic` (the workload and its clients),
`invariants` (the database checks), `report` (JSON and summary).
"""
