"""Speed: Hypervisor against the original seed, its cost against the size of the data, the
load harness on PostgreSQL, and where a create's time goes.

    .venv/bin/python bench/speed.py --seed-dir /tmp/seed --seed-python /tmp/seed-venv/bin/python
    .venv/bin/python bench/speed.py --parts seed --seed-mode sustained --seed-dir ... (as above)
    .venv/bin/python bench/speed.py --parts scaling,profile   # any subset, merged into results
    .venv/bin/python bench/speed.py --smoke --out /tmp/s      # seconds, for the test suite

Parts (each table in bench/results/speed.md, all numbers in speed.json, plot speed.png):
  passes   `scheduler.run_pass` alone, 1,000 running and 100 ... 100,000 pending.
  floor    server CPU per request, one client: /healthz, /user/me, a create refused by
           validation, a create that starts; `--compare-dir` runs another checkout beside.
  seed     side by side with the original seed service, one uvicorn process each on its
           own SQLite file, the same client code at 8 and 32 clients, alternating rounds:
           creates/s, p50/p99, server CPU per create (`versus`); `--seed-mode fresh` (a
           new cluster per round) or `sustained` (one cluster). The seed is not part of
           this repository: pass a checkout and the interpreter of a virtualenv that has its
           requirements; it needs the local Redis on 6379, as its code says.
  scaling  one client, Hypervisor only: create at 10 vs 5,000 running and at 100 vs 10,000
           pending, the queue's first page at 100 vs 10,000 pending, /metrics at 1,000 vs
           100,000 stored deployments; SQLite, and PostgreSQL if it answers (`scaling`).
  load     `bench/load.py --replicas 2 --clients 32 --clusters 4` on a fresh PostgreSQL
           database; its JSON is kept next to ours (`loadrun`).
  profile  cProfile over in-process creates: the top 10 hotspots (`profiling`).

Traffic goes to 127.0.0.1 only; every loop is bounded in count and time. The machine may be
shared: each part measures its two sides in alternating rounds and reports how busy the
rest of the machine was.

Modules: `cli` (options, the run), `client` (HTTP client, bounded drive, percentiles),
`servers` (processes, set-up, PostgreSQL databases), `fill` (rows through SQL), `versus`,
`floor`, `scaling`, `loadrun`, `profiling`, `passes`, `report` (JSON, markdown, plot).
"""
