"""The HTTP client `hv` speaks through: JSON requests, errors as exceptions that say what
went wrong in a sentence, and the organization event stream with resume on reconnect."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx2 as httpx

# A request answers in well under a second; a server this slow is as good as gone.
TIMEOUT_SECONDS = 30.0
# The server sends a comment line at least every 15 s on an idle stream: twice that in
# silence means the connection is dead, and the stream is reopened from the last event.
STREAM_READ_TIMEOUT_SECONDS = 30.0
# How long a broken stream keeps trying to reconnect before `hv` gives up.
RECONNECT_FOR_SECONDS = 30.0


class HvError(Exception):
    """A failure `hv` reports in one message (no traceback), with its exit status."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(HvError):
    """The API refused: its status code and its `detail`."""

    def __init__(
        self, status_code: int, detail: Any, retry_after: str | None = None, token_sent: bool = True
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(describe_refusal(status_code, detail, retry_after, token_sent))


class Unreachable(HvError):
    """No answer from the server at all."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"could not reach {url}: {reason}")


class BadUrl(HvError):
    """A server address that is no http(s) URL: a usage error, nothing was sent."""

    exit_code = 2

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"not a server URL: {url!r} ({reason}); expected http://HOST[:PORT]")


def checked_url(url: str) -> str:
    """`url` without its trailing slash, if it names an http(s) server; else BadUrl."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise BadUrl(url, str(error)) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadUrl(url, "no http:// or https:// scheme and host")
    return url.rstrip("/")


class NotLoggedIn(HvError):
    def __init__(self, url: str) -> None:
        super().__init__(f"not logged in to {url}: run `hv login` (or set HV_TOKEN)")


def describe_refusal(
    status_code: int, detail: Any, retry_after: str | None = None, token_sent: bool = True
) -> str:
    """The API's `detail` for a person: a sentence as it is, a validation list one
    problem per line (`field: message`), plus what to do where that is clear."""
    if isinstance(detail, list):
        lines = ["the request does not validate:"]
        for issue in detail:
            if isinstance(issue, dict):
                where = [str(part) for part in issue.get("loc", [])]
                if where and where[0] in ("body", "query", "path", "header"):
                    where = where[1:]
                field = ".".join(where) or "request"
                lines.append(f"  {field}: {issue.get('msg', issue)}")
            else:
                lines.append(f"  {issue}")
        message = "\n".join(lines)
    elif detail is None or detail == "":
        message = f"the server answered {status_code}"
    else:
        message = str(detail)
    if status_code == 401 and token_sent:
        message += " (run `hv login`)"  # the token expired or is not this server's
    elif status_code == 429 and retry_after:
        message += f" (retry after {retry_after} s)"
    return message


def _reason(error: httpx.TransportError) -> str:
    """A short cause of a transport failure: the OS's words where there are some."""
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(error) or type(error).__name__


class Api:
    """One server and, when logged in, its bearer token."""

    def __init__(
        self, url: str, token: str = "", transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = checked_url(url)
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=TIMEOUT_SECONDS, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def require_login(self) -> None:
        if not self.token:
            raise NotLoggedIn(self.url)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx (None for an empty one); ApiError otherwise."""
        try:
            response = self._client.request(
                method,
                path,
                json=json_body,
                data=dict(form) if form is not None else None,
                params=_query(params),
            )
        except httpx.TransportError as error:
            raise Unreachable(self.url, _reason(error)) from None
        if response.is_success:
            return response.json() if response.content else None
        raise _refusal(response, bool(self.token))

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body)

    def events(self, org: str, after: int = 0, **filters: Any) -> Iterator[dict[str, Any]]:
        """The organization's events live, from after `after`, forever: each as the JSON
        object of its `data:` line.

        A stream that ends (a server restarting), breaks or falls silent is reopened with
        `Last-Event-ID`, so nothing is missed or repeated; so is one refused for a passing
        reason (5xx, 429) once it had connected. A refusal that stays (401, 404), a first
        connection that fails, or a server gone for RECONNECT_FOR_SECONDS is raised."""
        last = after
        connected = False
        failing_since: float | None = None
        timeout = httpx.Timeout(TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT_SECONDS)
        while True:
            failure: HvError | None = None
            try:
                with self._client.sse(
                    f"/organization/{org}/events",
                    params=_query(filters),
                    headers={"Last-Event-ID": str(last)},
                    timeout=timeout,
                ) as source:
                    response = source.response
                    if response.is_success:
                        connected, failing_since = True, None
                        for frame in source:
                            if frame.data:
                                event = json.loads(frame.data)
                                last = int(event["id"])
                                yield event
                    else:
                        response.read()
                        failure = _refusal(response, bool(self.token))
                        if not connected or not _passing(response.status_code):
                            raise failure
            except httpx.SSEError as error:
                raise HvError(f"{self.url} did not answer with an event stream: {error}") from None
            except httpx.TransportError as error:
                failure = Unreachable(self.url, _reason(error))
                if not connected:
                    raise failure from None
            if failure is not None:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= RECONNECT_FOR_SECONDS:
                    raise failure
            time.sleep(0.5)


def _passing(status_code: int) -> bool:
    """A refusal worth retrying: the server is overloaded, restarting or rate limiting."""
    return status_code == 429 or status_code >= 500


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the ones left unset."""
    if params is None:
        return None
    return {key: value for key, value in params.items() if value is not None}


def _refusal(response: httpx.Response, token_sent: bool) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
    else:
        detail = f"the server answered {response.status_code} {response.reason_phrase}".strip()
    retry_after = response.headers.get("Retry-After")
    return ApiError(response.status_code, detail, retry_after, token_sent)
