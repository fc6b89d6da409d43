"""opencbr: a self-hosted backup and recovery service speaking the CBR v3 API.

Layers, lowest first (see docs/design.md): settings, errors, clock -> storage -> archive
-> db -> services -> jobs -> api -> app/cli. A module imports only from layers below it.
"""

__version__ = "0.1.0"
