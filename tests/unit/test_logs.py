"""The log's two formats, its tracebacks and its redaction of secrets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog

from opencbr import logs
from opencbr.settings import load_settings

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def configured(tmp_path: Path, log_format: str) -> None:
    logs.configure(load_settings(None, data_dir=tmp_path, log_format=log_format))


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def fail_with_a_secret_in_a_local() -> None:
    password = "local-hunter2"  # a traceback with locals would print it
    raise ValueError(f"lookup failed for {len(password)} chars\nsecond line")


def log_a_failure() -> None:
    try:
        fail_with_a_secret_in_a_local()
    except ValueError:
        structlog.get_logger("opencbr.test").exception("it broke", vault_id="v-1")


def plain_pairs(line: str) -> dict[str, Any]:
    pairs = re.findall(r'(\w+)=("(?:\\.|[^"\\])*"|\S*)', line)
    return {key: json.loads(value) if value.startswith('"') else value for key, value in pairs}


def test_plain_format_writes_one_key_value_line_per_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configured(tmp_path, "plain")
    capsys.readouterr()
    structlog.get_logger("opencbr.test").info("backup done", backup_id="b 1", size=3)
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    log_a_failure()
    first, second, third = lines(capsys)
    assert first.startswith("timestamp=") and " level=info logger=opencbr.test " in first
    assert plain_pairs(first) == {
        "timestamp": plain_pairs(first)["timestamp"],
        "level": "info",
        "logger": "opencbr.test",
        "event": "backup done",
        "backup_id": "b 1",
        "size": "3",
    }
    assert TIMESTAMP.fullmatch(plain_pairs(first)["timestamp"])
    assert plain_pairs(second)["event"] == "Started server process [42]"
    assert plain_pairs(second)["logger"] == "uvicorn.error"
    failure = plain_pairs(third)
    assert (failure["level"], failure["event"], failure["vault_id"]) == ("error", "it broke", "v-1")
    assert failure["exception"].startswith("Traceback (most recent call last):\n")
    assert "ValueError: lookup failed for 13 chars\nsecond line" in failure["exception"]
    assert "local-hunter2" not in third


def test_json_format_writes_one_object_per_line_with_frames_and_no_locals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configured(tmp_path, "json")
    capsys.readouterr()
    structlog.get_logger("opencbr.test").warning("slow", seconds=1.5)
    logging.getLogger("huey").error("task %s failed", "t-1")
    log_a_failure()
    first, second, third = (json.loads(line) for line in lines(capsys))
    assert list(first) == ["timestamp", "level", "logger", "event", "seconds"]
    assert TIMESTAMP.fullmatch(first["timestamp"])
    assert (first["level"], first["event"], first["seconds"]) == ("warning", "slow", 1.5)
    assert (second["logger"], second["event"]) == ("huey", "task t-1 failed")
    (error,) = third["exception"]
    assert error["exc_type"] == "ValueError"
    assert error["frames"][-1]["name"] == "fail_with_a_secret_in_a_local"
    assert all("locals" not in frame for frame in error["frames"])
    assert "local-hunter2" not in json.dumps(third)


def test_library_info_lines_are_dropped_and_their_warnings_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configured(tmp_path, "plain")
    capsys.readouterr()
    logging.getLogger("huey.consumer").info("Executing task")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("huey.consumer").warning("worker died")
    (line,) = lines(capsys)
    assert "worker died" in line


def test_an_exception_marked_as_logged_is_not_logged_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configured(tmp_path, "plain")
    capsys.readouterr()
    handled, unhandled = ValueError("handled"), ValueError("unhandled")
    logs.mark_logged(handled)
    server = logging.getLogger("uvicorn.error")
    for exc in (handled, unhandled):
        server.error("Exception in ASGI application\n", exc_info=exc)
    (line,) = lines(capsys)
    assert "ValueError: unhandled" in line


SECRETS = ("hunter2", "gAAAAtoken", "SK0123456789", "sig0abcdef", "qu3ue-pw")


@pytest.mark.parametrize(
    "text",
    [
        '{"auth": {"identity": {"password": {"user": {"name": "a", "password": "hunter2"}}}}}',
        'b\'{"password": "hunter2"}\'',
        "{'password': 'hunter2', 'name': 'admin'}",
        "login failed: password=hunter2 user=admin",
        "[(b'host', b'x'), (b'x-auth-token', b'gAAAAtoken'), (b'accept', b'*/*')]",
        "headers: X-Subject-Token: gAAAAtoken",
        "Authorization: SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host, Signature=sig0abcdef",
        "{'access': 'AK1', 'secret': 'SK0123456789'}",
        "sk=SK0123456789&ak=AK1",
        '"token": "gAAAAtoken"',
        "input_value='hunter2' for user_password: 'hunter2'",
        "cannot use the queue redis://:qu3ue-pw@10.0.0.5:6379/13: refused",
        "connecting to 'postgresql://opencbr:qu3ue-pw@db:5432/opencbr' failed",
        "rediss://user:qu3ue-pw@cache/0",
    ],
)
def test_secrets_in_text_are_masked(text: str) -> None:
    masked = logs.redact_text(text)
    assert logs.REDACTED in masked
    assert not any(secret in masked for secret in SECRETS), masked


def test_sensitive_keys_are_masked_at_any_depth_and_the_rest_kept() -> None:
    event = {
        "event": "request",
        "password": "hunter2",
        "X-Auth-Token": "gAAAAtoken",
        "headers": {"authorization": "SDK-HMAC-SHA256 Signature=sig0abcdef", "host": "h"},
        "items": [{"secret_key": "SK0123456789"}, "sk: SK0123456789"],
        "token_ttl": None,
        "vault_id": "v-1",
        "count": 3,
    }
    masked = logs.redact(None, "info", event)
    assert not any(secret in json.dumps(masked) for secret in SECRETS)
    assert masked["headers"]["host"] == "h"
    assert (masked["vault_id"], masked["count"], masked["event"]) == ("v-1", 3, "request")


def test_words_that_only_contain_a_sensitive_name_are_kept() -> None:
    text = "task=run_checkpoint tokens=3 skipped=2 desk=1 /identity/v3/auth/tokens"
    assert logs.redact_text(text) == text


def test_redaction_applies_to_log_lines_and_exception_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configured(tmp_path, "plain")
    capsys.readouterr()
    log = structlog.get_logger("opencbr.test")
    try:
        raise RuntimeError("bad body {'password': 'hunter2'}")
    except RuntimeError:
        log.exception("failed", x_auth_token="gAAAAtoken", detail="secret=SK0123456789")
    logging.getLogger("uvicorn.error").info("Authorization: Basic sig0abcdef")
    output = capsys.readouterr().err
    assert output.count(logs.REDACTED) >= 4
    assert not any(secret in output for secret in SECRETS)
