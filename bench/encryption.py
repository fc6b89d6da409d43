"""Issue 18's figures: what encryption at rest costs, on the run's dataset and server.

The run's server then has two more regions, `plain1` and `plain2`, with `encryption =
false` (`server.write_config`); region1 and region2 encrypt (the default). Every region has
a project of its own. Each operation is measured `repeats` times in both modes (encrypted:
region1 -> region2; unencrypted: plain1 -> plain2), the mode going first alternating
between repeats, all backups first, then all replications, then all migrations:

- `backup_full_<mode>`: the dataset, registered afresh, backed up into a fresh vault (a
  full backup: no earlier backup of that resource, no chunk in that vault);
- `replication_<mode>`: such a backup replicated into a fresh replication vault of the
  other region, i.e. into another project: encrypted, each chunk's key is opened with the
  source project's data key and sealed again with the destination's;
- `migration_<mode>`: migrateresources of such a vault into a fresh vault of the same
  region, i.e. within one project, where ciphertext is copied as it is
  (services/migrations.py): the "replication within a project" of the issue.

A migration ends with garbage collection of the vault it left, which deletes its chunk
files: the next measurement waits (untimed) until the vault is empty, so no collection
runs during one, and migrations come last, so the deleted files' inodes (bench/README.md,
"Machine state") slow only migrations, of both modes alike.

Each recorded result is the median run (the lower one of an even count), its
`extra.seconds_each` every run, its peak RSS the highest of them. Both modes' backups are
checked to be what their region says (`extend_info.encrypted`), or the run fails.

The AEAD's raw speed is measured here, in the bench process, with the call opencbr seals
with (`encrypt_into` where `cryptography` has it, else `encrypt`): 1 MiB buffers, a fresh
nonce each, one thread.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from bench.measure import MiB, Result
from bench.opencbr_runner import OpencbrRunner

# mode -> (source region, destination region, encrypted)
MODES = {"encrypted": ("region1", "region2", True), "plain": ("plain1", "plain2", False)}
UNENCRYPTED_REGIONS = ("plain1", "plain2")
OPERATIONS = ("backup_full", "replication", "migration")
AEADS: dict[str, type[AESGCM] | type[ChaCha20Poly1305]] = {
    "AES-256-GCM": AESGCM,
    "ChaCha20-Poly1305": ChaCha20Poly1305,
}
AEAD_BUFFER = MiB
AEAD_ROUND_SECONDS = 0.25
AEAD_ROUNDS = 3
TAG_SIZE = 16
GC_TIMEOUT = 120.0  # seconds to wait for a migrated-from vault's garbage collection
ASSOCIATED = bytes(100)  # about a sealed chunk's: header, nonce and its 64-hex-digit name


@dataclass
class Phase:
    """What the phase needs from the run."""

    runner: OpencbrRunner
    tree: Path  # the dataset, inside both source regions' protectable roots
    logical: int
    repeats: int
    record: Callable[[Result, float], None]  # the run's: adds it to the results
    log: Callable[[str], None]


def run(phase: Phase, load1: Callable[[], float]) -> dict[str, Any]:
    """Every operation, repeated in both modes; the median of each; the AEAD's speed."""
    started_load = load1()
    backups = {(mode, i): _backup(phase, mode, i) for i, mode in _order(phase.repeats)}
    replications = [
        _replicate(phase, mode, i, backups[mode, i]) for i, mode in _order(phase.repeats)
    ]
    migrations = [_migrate(phase, mode, i, backups[mode, i]) for i, mode in _order(phase.repeats)]
    measured = [result for result, _vault, _body in backups.values()]
    for operation in OPERATIONS:
        for mode in MODES:
            name = f"{operation}_{mode}"
            runs = [r for r in [*measured, *replications, *migrations] if r.operation == name]
            phase.record(_median(name, runs), started_load)
    return {
        "repeats": phase.repeats,
        "regions": {mode: list(regions[:2]) for mode, regions in MODES.items()},
        "aead_gib_per_s": aead_speed(),
    }


def _order(repeats: int) -> list[tuple[int, str]]:
    """(repeat, mode) in measuring order: the mode going first alternates."""
    modes = list(MODES)
    return [(i, mode) for i in range(repeats) for mode in (modes if i % 2 == 0 else modes[::-1])]


def _backup(phase: Phase, mode: str, repeat: int) -> tuple[Result, str, dict[str, Any]]:
    """A full backup of the dataset into a fresh vault: the result, vault id, backup."""
    region, _destination, encrypted = MODES[mode]
    vault = phase.runner.fresh_vault(region, f"enc-bench-{mode}-{repeat}", phase.tree)
    result, backup = phase.runner.backup(
        vault, f"backup_full_{mode}-{repeat}", phase.logical, region
    )
    if backup["extend_info"]["encrypted"] is not encrypted:
        raise RuntimeError(f"a {mode} backup in {region} says encrypted={not encrypted}")
    return _ran(phase, result, repeat), vault, backup


def _replicate(
    phase: Phase, mode: str, repeat: int, backed_up: tuple[Result, str, dict[str, Any]]
) -> Result:
    """The backup replicated into a fresh replication vault of the other region."""
    source, destination, _encrypted = MODES[mode]
    name = f"enc-bench-replica-{mode}-{repeat}"
    replica = phase.runner.api.create_vault(destination, name, [], "replication")
    result = phase.runner.replicate(
        backed_up[1], replica, f"replication_{mode}-{repeat}", phase.logical, (source, destination)
    )
    return _ran(phase, result, repeat)


def _migrate(
    phase: Phase, mode: str, repeat: int, backed_up: tuple[Result, str, dict[str, Any]]
) -> Result:
    """The backup's vault migrated into a fresh vault of its region; then, untimed, the
    garbage collection of the vault it left."""
    region = MODES[mode][0]
    _result, vault, backup = backed_up
    moved_to = phase.runner.api.create_vault(region, f"enc-bench-moved-{mode}-{repeat}", [])
    result = phase.runner.migrate(
        region, vault, backup, moved_to, f"migration_{mode}-{repeat}", phase.logical
    )
    if not phase.runner.wait_until_empty(region, vault, GC_TIMEOUT):
        phase.log(f"encryption: vault {vault} not collected after {GC_TIMEOUT:g} s")
    return _ran(phase, result, repeat)


def _ran(phase: Phase, result: Result, repeat: int) -> Result:
    """Name the result by its operation: "-<repeat>" named only the profile (--profile)."""
    result.operation = result.operation.removesuffix(f"-{repeat}")
    result.extra["repeat"] = repeat
    phase.log(f"encryption: {result.operation} #{repeat}: {result.seconds:.2f} s")
    return result


def _median(operation: str, results: list[Result]) -> Result:
    middle = statistics.median_low(r.seconds for r in results)
    chosen = next(r for r in results if r.seconds == middle)
    extra = {**chosen.extra, "seconds_each": [round(r.seconds, 3) for r in results]}
    peaks = [r.peak_rss_bytes for r in results if r.peak_rss_bytes is not None]
    return Result(
        "opencbr",
        operation,
        chosen.seconds,
        chosen.logical_bytes,
        chosen.moved_bytes,
        max(peaks) if peaks else None,
        extra,
    )


# --- the AEAD on its own -------------------------------------------------------------------


def aead_speed() -> dict[str, float]:
    """GiB/s sealing 1 MiB buffers, per AEAD: the median of a few timed rounds."""
    data = os.urandom(AEAD_BUFFER)
    return {name: round(_seal_rate(cls(os.urandom(32)), data), 2) for name, cls in AEADS.items()}


def _seal_rate(cipher: AESGCM | ChaCha20Poly1305, data: bytes) -> float:
    out = bytearray(len(data) + TAG_SIZE)
    into = hasattr(cipher, "encrypt_into")  # cryptography >= 45, what sealing.py uses

    def seal() -> None:
        nonce = os.urandom(12)
        if into:
            cipher.encrypt_into(nonce, data, ASSOCIATED, out)
        else:
            cipher.encrypt(nonce, data, ASSOCIATED)

    rates = []
    for _round in range(AEAD_ROUNDS):
        sealed, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < AEAD_ROUND_SECONDS:
            seal()
            sealed += len(data)
        rates.append(sealed / elapsed / 2**30)
    return statistics.median(rates)
