"""One authenticated session with an opencbr server (the standard library's urllib).

With a password, the session logs in once (`POST /identity/v3/auth/tokens`, scoped to the
project by id or by name) and sends `X-Auth-Token`; with an access key it signs every
request as the Huawei SDK does (`opencbr.signing.sign_request`) and, given a project name,
asks the server for its id (`GET /v3/projects?name=`). Errors come back as `ApiError`
with CBR's code and message; tokens and secrets never appear in one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from opencbr.client.config import Credentials
from opencbr.signing import sign_request

USER_AGENT = "opencbr-client"
OPERATION_LOG_HEADER = "X-Opencbr-Operation-Log"
PAGE = 1000  # the largest `limit` the server takes
Params = Mapping[str, str | int | bool | list[str] | None]


class ClientError(Exception):
    """The call could not be made or answered as expected; the message says why."""


class ApiError(ClientError):
    """The server refused the call: HTTP status, CBR error code and message."""

    def __init__(self, status: int, code: str, message: str, request_id: str = "") -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, None when empty


@dataclass
class Session:
    credentials: Credentials
    timeout: float = 60.0
    _token: str | None = field(default=None, repr=False)
    _project_id: str | None = None

    @property
    def project_id(self) -> str:
        """The project every CBR call is made in (logging in or asking when needed)."""
        if self._project_id is None:
            if self.credentials.signs:
                self._project_id = self.credentials.project_id or self._project_by_name()
            else:
                self._log_in()
        assert self._project_id is not None
        return self._project_id

    # --- CBR calls in the session's project ---------------------------------------------

    def get(self, path: str, params: Params | None = None) -> Any:
        return self.call("GET", path, params=params).body

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body=body).body

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body=body).body

    def delete(self, path: str) -> None:
        self.call("DELETE", path)

    def call(
        self, method: str, path: str, *, body: Any = None, params: Params | None = None
    ) -> Answer:
        """`METHOD /v3/{project_id}{path}`."""
        return self.raw(method, f"/v3/{self.project_id}{path}", body=body, params=params)

    def pages(self, path: str, key: str, params: Params | None = None) -> Iterator[Any]:
        """Every item of a list, page by page (limit/offset)."""
        offset = 0
        while True:
            page = self.get(path, {**(params or {}), "limit": PAGE, "offset": offset})
            items = page.get(key) or []
            yield from items
            offset += len(items)
            count = page.get("count")
            if len(items) < PAGE or (isinstance(count, int) and offset >= count):
                return

    # --- any path of the server -----------------------------------------------------------

    def raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Params | None = None,
        project_header: bool = True,
    ) -> Answer:
        """`METHOD <server><path>`, authenticated (a token, or an AK/SK signature)."""
        url = self.credentials.service_url + quote(path)
        query = _query(params)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        target = f"{url}?{query}" if query else url
        if self.credentials.signs:
            self._sign(method, url, query, headers, data, project_header)
            return self._send(method, target, headers, data)
        headers["X-Auth-Token"] = self._auth_token()
        try:
            return self._send(method, target, headers, data)
        except ApiError as exc:
            if exc.status != 401:
                raise
        # The token expired or was revoked during a long wait: log in again, once.
        self._token = None
        headers["X-Auth-Token"] = self._auth_token()
        return self._send(method, target, headers, data)

    def _sign(
        self,
        method: str,
        url: str,
        query: str,
        headers: dict[str, str],
        data: bytes,
        project_header: bool,
    ) -> None:
        parts = urlsplit(url)
        signed = {"Host": parts.netloc, **headers}
        if project_header:
            signed["X-Project-Id"] = self.project_id
        access, secret = self.credentials.access_key or "", self.credentials.secret_key or ""
        added = sign_request(
            method, parts.path, query, signed, data, access, secret, datetime.now(UTC)
        )
        headers.update({key: value for key, value in signed.items() if key != "Host"})
        headers.update(added)

    def _auth_token(self) -> str:
        if self._token is None:
            self._log_in()
        assert self._token is not None
        return self._token

    def _log_in(self) -> None:
        credentials = self.credentials
        if credentials.project_id:
            scope: dict[str, Any] = {"id": credentials.project_id}
        else:
            domain = {"name": credentials.project_domain_name}
            scope = {"name": credentials.project_name, "domain": domain}
        user = {
            "name": credentials.username,
            "domain": {"name": credentials.user_domain_name},
            "password": credentials.password,
        }
        body = {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": scope},
            }
        }
        answer = self._send(
            "POST",
            f"{credentials.identity_url}/auth/tokens?nocatalog",
            {"Content-Type": "application/json", "User-Agent": USER_AGENT},
            json.dumps(body).encode(),
        )
        token = answer.headers.get("X-Subject-Token")
        project = (answer.body or {}).get("token", {}).get("project", {})
        if not token or not project.get("id"):
            raise ClientError("the identity service answered without a token")
        self._token, self._project_id = token, str(project["id"])

    def _project_by_name(self) -> str:
        name = self.credentials.project_name or ""
        answer = self.raw("GET", "/v3/projects", params={"name": name}, project_header=False)
        projects = (answer.body or {}).get("projects") or []
        if len(projects) != 1:
            raise ClientError(f"no project named {name!r} for this access key")
        return str(projects[0]["id"])

    def _send(self, method: str, url: str, headers: dict[str, str], data: bytes) -> Answer:
        request = urllib.request.Request(url, data=data or None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return Answer(response.status, response.headers, _json(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                request_id = exc.headers.get("X-Request-Id", "") or ""
                raise _api_error(exc.code, request_id, exc.read()) from None
        except urllib.error.URLError as exc:
            where = urlsplit(url)
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise ClientError(f"cannot reach {where.scheme}://{where.netloc}: {reason}") from None
        except TimeoutError:
            raise ClientError(f"no answer within {self.timeout:g} s from {method} {url}") from None


def _query(params: Params | None) -> str:
    """The query string: None values left out, lists repeated, spaces as %20 (a raw `+`
    would be ambiguous to a signature)."""
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = str(item).lower() if isinstance(item, bool) else str(item)
            pairs.append((key, text))
    return urlencode(pairs, quote_via=quote)


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ClientError("the server answered with something that is not JSON") from None


def _api_error(status: int, request_id: str, raw: bytes) -> ApiError:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    if isinstance(body, dict) and "error_code" in body:
        return ApiError(status, str(body["error_code"]), str(body.get("error_msg", "")), request_id)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # Keystone's shape
        error = body["error"]
        return ApiError(status, str(error.get("code", status)), str(error.get("message", "")))
    return ApiError(status, str(status), f"HTTP {status}", request_id)
