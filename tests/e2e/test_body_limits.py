"""Body limits on a real server (uvicorn): a chunked body is refused like a declared one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.flows import Server

pytestmark = pytest.mark.slow  # real `opencbr` processes: seconds a test

MiB = 1 << 20
LIMIT = 12 * MiB  # the default max_body_bytes


def _chunked_body(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    yield b'{"auth": {"identity": {"methods": ["password"], "x": "'
    for _ in range(total // size):
        yield b"a" * size
    yield b'"}}}'


def test_a_chunked_body_over_the_limit_is_413_on_a_real_server(server: Server) -> None:
    url = f"{server.url}/identity/v3/auth/tokens"
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60) as client:
        request = client.build_request(
            "POST", url, content=_chunked_body(LIMIT + MiB), headers=headers
        )
        assert request.headers["transfer-encoding"] == "chunked"
        response = client.send(request)
        assert response.status_code == 413, response.text
        assert response.json()["error_code"] == "APIGW.0201"
        declared = client.post(url, content=b"a" * (LIMIT + 1), headers=headers)
        assert declared.status_code == 413, declared.text
        # under the limit, the chunked body reaches the handler, whose validation answers
        small = client.post(url, content=_chunked_body(MiB), headers=headers)
        assert small.status_code == 400, small.text
