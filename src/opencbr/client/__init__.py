"""The `opencbr` client commands: vaults, resources, backups, restores and replication of
any opencbr deployment, over its HTTP API, authenticated the OpenStack way (clouds.yaml or
OS_* variables, or an AK/SK pair). Imports nothing of the server (see ruff.toml)."""
