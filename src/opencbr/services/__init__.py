"""Use cases, one module per feature (identity, vaults, protectables, backups, replication...).

Services own their transactions (``db.transaction()``), raise ``CbrError`` with a stable CBR
code, and return models or plain dataclasses. They may import settings, errors, clock,
storage, archive and db; never jobs or api.
"""
