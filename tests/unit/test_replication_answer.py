"""The vault replicate call's answer list, written as text: the bytes to_json writes, for
every id, and the record ids a plan gives."""

from __future__ import annotations

import uuid

import pytest
from pydantic_core import to_json

from opencbr.api.routes.replication import _pairs_json
from opencbr.services import planned_records


def _expected(backup_ids: list[str], record_ids: list[str]) -> bytes:
    return to_json(
        [
            {"backup_id": backup_id, "replication_record_id": record_id}
            for backup_id, record_id in zip(backup_ids, record_ids, strict=True)
        ]
    )


def test_the_answer_list_is_what_to_json_writes() -> None:
    backup_ids = [str(uuid.uuid4()) for _ in range(1000)]
    record_ids = planned_records.record_ids("0" * 28, 1000)
    assert _pairs_json(backup_ids, record_ids) == _expected(backup_ids, record_ids)
    assert _pairs_json([], []) == b"[]"


@pytest.mark.parametrize(
    "awkward", ['a"b', "a\\b", "tab\there", "nul\x00", "é-ü", "line\nbreak", "\u2028", " "]
)
def test_ids_that_need_escaping_are_escaped(awkward: str) -> None:
    backup_ids = [str(uuid.uuid4()), awkward, str(uuid.uuid4())]
    record_ids = planned_records.record_ids("f" * 28, 3)
    assert _pairs_json(backup_ids, record_ids) == _expected(backup_ids, record_ids)


def test_record_ids_number_a_plan_in_hex_and_grow_with_the_largest_plan() -> None:
    small = planned_records.record_ids("p" * 28, 3)
    assert small == ["p" * 28 + "00000000", "p" * 28 + "00000001", "p" * 28 + "00000002"]
    large = planned_records.record_ids("q" * 28, 70_000)
    assert len(set(large)) == 70_000 and large[-1] == "q" * 28 + f"{69_999:08x}"
    assert planned_records.record_ids("p" * 28, 3) == small
