"""Benchmarks of opencbr against restic, borg and `cp -r` + `sync` (issue 6).

`python -m bench` generates a deterministic dataset, runs every tool on it in one run and
writes a table, a JSON file and a PNG chart. Modules, one concern each:

    dataset.py         seeded dataset, mutated copy and many-small-files tree
    measure.py         wall time and peak RSS of one child process; the Result record
    peers.py           restic, borg and cp runs
    server.py          an `opencbr serve` process with its TOML config
    client.py          the CBR HTTP calls the benchmark needs (tokens, polling)
    opencbr_runner.py  opencbr backup, restore and replication measurements
    seed.py            10,000 backup rows written straight into the server's database
    load.py            API latency: the load generator (a second process) and its driver
    report.py          targets, terminal table and JSON (`python -m bench.report FILE`)
    chart.py           the PNG chart (matplotlib, the `bench` optional dependency)
    __main__.py        the command line and the order of the run

Imports opencbr only in seed.py (its SQLAlchemy models); everything else talks to a real
`opencbr serve` process over HTTP, as a user would.
"""
