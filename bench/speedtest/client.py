"""The one client every measurement uses: stdlib keep-alive HTTP/1.1 connections, a bounded
loop of C threads, and the percentiles of what they timed."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class Http:
    """One keep-alive connection to 127.0.0.1 (http.client costs the client far less CPU per
    request than a full-featured library, which matters when client and server share two
    cores). A request that fails is not retried: it answers status 0."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 60):
        parts = urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"benchmarks talk to 127.0.0.1 only, not {base_url}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """(status, body); status 0 when the connection failed."""
        payload = json.dumps(body).encode() if body is not None else None
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=payload, headers=self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.close()
            return 0, b""
        if response.will_close:
            self.close()
        return response.status, data

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, data = self.request(method, path, body)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# One timed operation: given the thread's connection and a sequence number, send the
# request(s) and return (ok, seconds of the timed request, anything to keep).
Operation = Callable[[Http, int], tuple[bool, float, Any]]


def timed(http: Http, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
    """Send one request and time it: (status, parsed body, seconds)."""
    started = time.perf_counter()
    status, parsed = http.json(method, path, body)
    return status, parsed, time.perf_counter() - started


@dataclass
class Drive:
    """What one bounded drive saw."""

    latencies: list[float] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round(self.elapsed, 3),
            "per_second": round(self.ok / self.elapsed, 2) if self.elapsed else 0.0,
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 2),
        }


def drive(
    base_url: str,
    headers: dict[str, str],
    clients: int,
    count: int,
    seconds: float,
    operation: Operation,
) -> Drive:
    """`count` operations from `clients` threads, each on its own connection, stopping early
    at `seconds`. Only successful operations are timed; failures are counted."""
    result = Drive()
    lock = threading.Lock()
    sequence = iter(range(count))
    deadline = time.monotonic() + seconds

    def client(_: int) -> None:
        http = Http(base_url, headers)
        try:
            while time.monotonic() < deadline:
                with lock:
                    index = next(sequence, None)
                if index is None:
                    return
                ok, latency, keep = operation(http, index)
                with lock:
                    if ok:
                        result.latencies.append(latency)
                        result.kept.append(keep)
                    else:
                        result.errors += 1
        finally:
            http.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    result.elapsed = time.perf_counter() - began
    return result


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the relative spread (max-min)/median of per-round values."""
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "relative_spread": 0.0}
    middle = statistics.median(values)
    return {
        "median": round(middle, 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "relative_spread": round((max(values) - min(values)) / middle, 3) if middle else 0.0,
    }
