"""Error codes and statuses are defined once, and SQL that lists statuses comes from them."""

from __future__ import annotations

import ast
import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType

from opencbr import errors
from opencbr.db import status
from opencbr.db.status import LIVE_RECORD, RecordStatus, sql_in
from opencbr.services.checkpoints import settled_status

MIGRATIONS = Path(status.__file__).parent / "migrations" / "versions"


def _migration(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MIGRATIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_error_code_has_one_constant() -> None:
    codes = Counter(
        value.code for value in vars(errors).values() if isinstance(value, errors.ErrorCode)
    )
    assert codes, "errors.py defines no ErrorCode"
    assert [code for code, count in codes.items() if count > 1] == []


def test_every_error_code_defined_is_used() -> None:
    """errors.py holds the codes opencbr answers, not CBR's whole table: a constant no
    module names is a code never raised (raise it where CBR does, or remove it)."""
    source = Path(errors.__file__).parent
    names = {name for name, value in vars(errors).items() if isinstance(value, errors.ErrorCode)}
    used: set[str] = set()
    for module in source.rglob("*.py"):
        if module != Path(errors.__file__):
            tree = ast.parse(module.read_text())
            used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
            used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert sorted(names - used) == []


def test_a_code_answered_with_another_status_keeps_its_code_and_message() -> None:
    path_invalid = errors.RESOURCE_NOT_FOUND.with_status(400)
    assert (path_invalid.code, path_invalid.status) == ("BackupService.6302", 400)
    assert path_invalid.message == errors.RESOURCE_NOT_FOUND.message
    assert errors.RESOURCE_NOT_FOUND.status == 404  # the constant itself is untouched


def test_live_record_index_condition_is_the_one_the_migration_created() -> None:
    created = _migration("0005_replication_records_live").LIVE.text
    assert sql_in("status", LIVE_RECORD) == created
    assert created == "status IN ('waiting_replicate', 'replicating')"


def test_sql_in_lists_the_wire_values_in_order() -> None:
    assert sql_in("s", [RecordStatus.SUCCESS, RecordStatus.FAIL]) == "s IN ('success', 'fail')"


def test_statuses_are_their_wire_strings() -> None:
    assert RecordStatus.WAITING == "waiting_replicate"
    assert f"{RecordStatus.WAITING}" == "waiting_replicate"
    assert str(status.BackupStatus.AVAILABLE) == "available"


def test_a_checkpoint_settles_once_no_backup_is_being_written() -> None:
    assert settled_status({"available", "protecting"}) is None
    assert settled_status({"error", "waiting_protect"}) is None
    assert settled_status({"available", "error"}) == "available"
    assert settled_status({"error"}) == "error"
    assert settled_status(set()) == "available"  # every backup of it was deleted
