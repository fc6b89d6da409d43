"""Issue 18's figures: what encryption at rest costs, on the run's dataset and server.

The run's server then has two more regions, `plain1` and `plain2`, with `encryption =
false` (`server.write_config`); region1 and region2 encrypt (the default). Every region has
a project of its own. Each repeat measures, in both modes (encrypted: region1 -> region2;
unencrypted: plain1 -> plain2), the mode going first alternating between repeats:

- `backup_full_<mode>`: the dataset, registered afresh, backed up into a fresh vault (a
  full backup: no earlier backup of that resource, no chunk in that vault);
- `replication_<mode>`: that backup replicated into a fresh replication vault of the
  other region, i.e. into another project: encrypted, every chunk is opened with the
  source project's data key and sealed again with the destination's;
- `migration_<mode>`: migrateresources of the vault into a fresh vault of the same region,
  i.e. within one project, where ciphertext is copied as it is (services/migrations.py):
  the "replication within a project" of the issue.

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
    """Every repeat in both modes, then the median of each operation; the AEAD speed."""
    runs: dict[str, list[Result]] = {}
    started_load = load1()
    for repeat in range(phase.repeats):
        order = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))
        for mode in order:
            for result in _one_mode(phase, mode, repeat):
                runs.setdefault(result.operation, []).append(result)
    for operation, results in runs.items():
        phase.record(_median(operation, results), started_load)
    return {
        "repeats": phase.repeats,
        "regions": {mode: list(regions[:2]) for mode, regions in MODES.items()},
        "aead_gib_per_s": aead_speed(),
    }


def _one_mode(phase: Phase, mode: str, repeat: int) -> list[Result]:
    """A full backup into a fresh vault, its replication into the other project, then its
    migration to a fresh vault of the same project."""
    source, destination, encrypted = MODES[mode]
    runner, api = phase.runner, phase.runner.api
    tag = f"{mode}-{repeat}"
    vault = runner.fresh_vault(source, f"enc-bench-{tag}", phase.tree)
    backup_result, backup = runner.backup(vault, f"backup_full_{tag}", phase.logical, source)
    if backup["extend_info"]["encrypted"] is not encrypted:
        raise RuntimeError(f"a {mode} backup in {source} says encrypted={not encrypted}")
    replica = api.create_vault(destination, f"enc-bench-replica-{tag}", [], "replication")
    regions = (source, destination)
    replication = runner.replicate(vault, replica, f"replication_{tag}", phase.logical, regions)
    moved_to = api.create_vault(source, f"enc-bench-moved-{tag}", [])
    migration = runner.migrate(source, vault, backup, moved_to, f"migration_{tag}", phase.logical)
    results = [backup_result, replication, migration]
    for result in results:  # "backup_full_encrypted-0" -> "backup_full_encrypted"
        result.operation = result.operation.replace(f"_{tag}", f"_{mode}")
        result.extra["repeat"] = repeat
    phase.log(f"encryption, {tag}: " + ", ".join(f"{r.seconds:.2f} s" for r in results))
    return results


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
