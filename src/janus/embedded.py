"""Deprecated alias of the throwaway servers: import them from :mod:`janus.testing`.

Kept so that existing ``from janus.embedded import RedisServer`` lines keep working; it
warns once on import and will be removed in a later release.
"""

from __future__ import annotations

import warnings

from janus._servers import (
    INSTALL_HINT,
    RedisCluster,
    RedisServer,
    find_redis_cli,
    find_redis_server,
    free_port,
)

__all__ = [
    "INSTALL_HINT",
    "RedisCluster",
    "RedisServer",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
]

warnings.warn(
    "janus.embedded is deprecated; import RedisServer, RedisCluster and free_port from "
    "janus.testing",
    DeprecationWarning,
    stacklevel=2,
)
