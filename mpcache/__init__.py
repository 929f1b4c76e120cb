"""mpcache: a memcached-compatible cache server on per-core channels.

The embedded API::

    import mpcache
    with mpcache.Server(port=0, threads=1, memory_mb=64) as srv:
        host, port = srv.address

The daemon is `mpcache` (or `python -m mpcache`), with memcached's flags.
"""

__version__ = "0.1.0"

from .config import ConfigError, Settings  # noqa: E402
from .server import ListenError, Server  # noqa: E402

__all__ = ["Server", "Settings", "ConfigError", "ListenError", "__version__"]
