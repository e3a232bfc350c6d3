"""The server's log, as an operator reads or parses it: one `key=value` line per event,
the same format for uvicorn's own lines as for ours."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx2 as httpx
from live_server import LiveServer

LINE = re.compile(
    r"^ts=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    r"level=(DEBUG|INFO|WARNING|ERROR|CRITICAL) logger=[\w.]+ msg=\S.*$"
)


def test_every_line_the_server_writes_has_the_one_key_value_format(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    with server:
        answer = httpx.post(
            f"{server.url}/user/register",
            json={"username": "alice", "password": "correct horse battery"},
        )
        assert answer.status_code == 201
    exit_status = server.stop()

    assert exit_status in (0, -signal.SIGTERM)
    assert server.lines, "the server wrote nothing"
    assert [line for line in server.lines if not LINE.match(line)] == []
    loggers = {line.split(" logger=", 1)[1].split(" ", 1)[0] for line in server.lines}
    assert {"uvicorn.error", "__main__"} <= loggers
    messages = "\n".join(server.lines)
    for event in ("Started server process", "hypervisor ready", "Finished server process"):
        assert f"msg={event}" in messages
