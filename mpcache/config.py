"""Server settings: defaults, validation, and the engine's view of them.

`Settings` is what the command line (mpcache/cli.py) and the embedded API
(mpcache.Server) both fill; `validate()` refuses what memcached refuses, with
memcached's messages and exit codes where it has them, so scripts that check
either keep working.  `engine_settings()` is the dict mpcache._engine.Engine
takes: the field names of mp_settings in ext/settings.h, mapped from
Settings in one place, ENGINE_KEYS.
"""

import errno
import importlib.util
import os
from dataclasses import dataclass, field

MB = 1024 * 1024

# sysexits.h, as memcached uses them.
EX_USAGE = 64
EX_NOUSER = 67
EX_OSERR = 71

DEFAULT_PORT = 11211
# memcached's default is every interface (INADDR_ANY); a cache with no
# authentication should not be reachable from the network by accident.
DEFAULT_LISTEN = "127.0.0.1"

ITEM_SIZE_MIN = 1024            # memcached's ITEM_SIZE_MAX_LOWER_LIMIT
ITEM_SIZE_MAX = 1024 * MB       # memcached's ITEM_SIZE_MAX_UPPER_LIMIT
# Above this memcached warns; a channel per core is the point of -t.
THREADS_WARN = 64
# Each channel is a thread with its own event loop and connection table;
# beyond this the value is a typo, not a machine.
THREADS_MAX = 1024
# The engine's per-channel listener table (MP_MAX_LISTENERS in ext/io/channel.h).
LISTENERS_MAX = 32
# The engine's room for the -Y path (auth_file in ext/settings.h): PATH_MAX,
# beyond which opening it fails anyway.
AUTH_FILE_MAX = 4096

# The engine's room for -Z's files (ssl_chain_cert, ssl_key, ssl_ca_cert in
# ext/settings.h: PATH_MAX) and for ssl_ciphers.
SSL_PATH_MAX = 4096
SSL_CIPHERS_MAX = 1024
# ssl_wbuf_size, in bytes: the plaintext of one SSL_write, whose length is an int.
SSL_WBUF_MAX = 1024 * MB
# ssl_verify_mode and ssl_min_version, as -o takes them (0-3).
SSL_LEVELS = range(4)
# -l's prefix for a plaintext listener beside TLS ones (-Z).
NOTLS_PREFIX = "notls:"

# Values of --io-engine; "auto" lets the engine probe io_uring and fall back.
IO_ENGINES = ("auto", "uring", "epoll")

# -o keys memcached 1.6.18 knows that mpcache accepts and ignores (with a
# warning): tuning knobs of memcached's own slab/LRU/extstore machinery.
MEMCACHED_EXTENDED_KEYS = frozenset("""
    hashpower no_hashexpand tail_repair_time hash_algorithm
    lru_crawler no_lru_crawler lru_crawler_sleep lru_crawler_tocrawl
    lru_maintainer no_lru_maintainer hot_lru_pct warm_lru_pct hot_max_factor
    warm_max_factor temporary_ttl watcher_logbuf_size worker_logbuf_size
    slab_sizes slab_chunk_max track_sizes slab_reassign no_slab_reassign
    slab_automove no_slab_automove slab_automove_ratio slab_automove_window
    slab_automove_freeratio modern no_modern no_chunked_items
    inline_ascii_resp no_inline_ascii_resp drop_privileges no_drop_privileges
    resp_obj_mem_limit read_buf_mem_limit meta_response_old sock_cookie_id
    expirezero_does_not_evict lru_segmented no_lru_segmented
    ext_path ext_page_size ext_wbuf_size ext_threads ext_io_depth ext_item_size
    ext_item_age ext_low_ttl ext_drop_unread ext_recache_rate
    ext_compact_under ext_drop_under ext_max_frag ext_max_sleep
    ext_path_allow_any slab_automove_freeratio
    proxy_config proxy_uring
""".split())


class ConfigError(ValueError):
    """A setting mpcache refuses; `code` is the process exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.message = message
        self.code = code


def parse_size(text):
    """-I's syntax: bytes, or a number with a k or m suffix ("1m", "512k")."""
    t = str(text).strip()
    mult = 1
    if t[-1:] in ("k", "K"):
        mult, t = 1024, t[:-1]
    elif t[-1:] in ("m", "M"):
        mult, t = MB, t[:-1]
    if not (t.isascii() and t.isdigit()):
        raise ConfigError(f"Invalid item size \"{text}\": bytes, or a number with a k or m suffix",
                          EX_USAGE)
    return int(t) * mult


def authfile_open_error(path, err):
    """memcached's message when it cannot open the -Y file: its vperror cuts
    the line at 1023 bytes, then perror adds errno's text."""
    text = os.strerror(err)
    return f"Could not open authfile [{path}] for reading, error {text}"[:1023] + ": " + text


def parse_metrics_listen(text):
    """--metrics-listen: "ADDR:PORT", "[V6ADDR]:PORT", or a bare PORT on
    127.0.0.1 -> (host, port).  Port 0 picks a free port (logged with -v)."""
    t = str(text).strip()
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        port = rest[1:] if sep and rest.startswith(":") else None
    elif ":" in t:
        host, _, port = t.rpartition(":")
    else:
        host, port = DEFAULT_LISTEN, t
    if not host or port is None or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"Invalid --metrics-listen \"{text}\": ADDR:PORT, [V6ADDR]:PORT or PORT",
                          EX_USAGE)
    return host, int(port)


def default_threads():
    """One channel per two CPUs this process may run on (taskset is
    honoured), at least one.  A cache shares its machine with its clients and
    neighbours: measured on 2 CPUs shared with the load (BENCHMARKS.md,
    "-t 2, nothing pinned"), one channel serves more than two, whose batches
    are half as big and which take turns on the CPU the others leave."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def default_io_engine():
    """MPCACHE_IO_ENGINE lets test suites pick a backend without new flags."""
    return os.environ.get("MPCACHE_IO_ENGINE", "auto")


@dataclass
class Settings:
    port: int = DEFAULT_PORT        # -1: ephemeral; 0: no TCP (memcached's meaning)
    udp_port: int = 0               # -U: 0 is off, as in memcached 1.6
    unix_socket: str = None
    unix_mask: int = 0o700
    listen: list = field(default_factory=lambda: [DEFAULT_LISTEN])
    threads: int = field(default_factory=default_threads)
    memory_mb: int = 64
    max_conns: int = 1024
    max_item_size: int = MB
    user: str = None
    verbose: int = 0
    enable_shutdown: bool = False
    reqs_per_event: int = 20
    use_cas: bool = True
    evict_to_free: bool = True
    flush_enabled: bool = True
    # -D <c>: per-prefix stats ("stats detail"), kept from the start, with
    # this delimiter; "stats detail on|off" switches them at run time
    prefix_delimiter: str = ":"
    detail_enabled: bool = False
    dump_enabled: bool = True       # !-X
    watch_enabled: bool = True      # !-W
    backlog: int = 1024
    factor: float = 1.08            # memcached's is 1.25: see ext/store/slabs.c
    chunk_size: int = 48
    idle_timeout: int = 0
    maxconns_fast: bool = True
    # -B: "auto" negotiates each connection's protocol from its first byte
    # (0x80: binary), "ascii" and "binary" start every connection so (-Y
    # implies ascii)
    protocol: str = "auto"
    relaxed_privileges: bool = False
    io_engine: str = field(default_factory=default_io_engine)
    daemonize: bool = False
    pidfile: str = None
    enable_coredumps: bool = False
    # --metrics-listen: where /metrics is served; None (the default) serves none.
    metrics_listen: str = None
    # Pin channel i to the i-th allowed CPU (--pin-channels).  Off by
    # default: on cores shared with the application a pinned channel cannot
    # move off a core another process needs (BENCHMARKS.md, -t 2 shared).
    pin_threads: bool = False
    # -Y: the password file of ASCII authentication, read when the engine
    # is created (ext/proto/auth.c) and on SIGHUP; None: no authentication.
    auth_file: str = None
    # -S: binary clients authenticate with SASL PLAIN before anything else;
    # the users are the "user:password" lines of sasl_pwdb (memcached's
    # $MEMCACHED_SASL_PWDB), read again at every authentication.  None: no
    # file, and no user authenticates.
    sasl: bool = False
    sasl_pwdb: str = None
    # -Z and its -o ssl_* options, memcached's names and defaults (files
    # None: not given).  Every TCP listener speaks TLS but a "notls:" -l
    # address; the Unix socket stays plaintext, as memcached's.
    ssl_enabled: bool = False
    ssl_chain_cert: str = None
    ssl_key: str = None
    ssl_keyformat: int = 1          # SSL_FILETYPE_PEM; 2 is ASN1 (DER)
    ssl_verify_mode: int = 0        # 0 none, 1 request, 2 require, 3 once
    ssl_ciphers: str = None
    ssl_ca_cert: str = None
    ssl_wbuf_size: int = 16 * 1024  # bytes (-o takes kilobytes)
    ssl_session_cache: bool = False
    ssl_kernel_tls: bool = False
    ssl_min_version: int = 2        # 0 tlsv1.0, 1 tlsv1.1, 2 tlsv1.2, 3 tlsv1.3

    @property
    def maxbytes(self):
        return self.memory_mb * MB

    def validate(self):
        """Raises ConfigError for what memcached (or mpcache) refuses to start
        with; returns the warnings to print for what it accepts but ignores."""
        warnings = []
        if not -1 <= self.port <= 65535:
            raise ConfigError(f"ERROR: Invalid port number {self.port}.", EX_USAGE)
        if not 0 <= self.udp_port <= 65535:
            raise ConfigError(f"ERROR: Invalid UDP port number {self.udp_port}.", EX_USAGE)
        if self.auth_file is not None:
            # memcached's checks before it reads the file; the file itself
            # is the engine's to read (ext/proto/auth.c), with memcached's messages
            if self.udp_port:
                raise ConfigError("Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
                                  EX_USAGE)
            if not self.auth_file:
                raise ConfigError(authfile_open_error(self.auth_file, errno.ENOENT))
            if len(os.fsencode(self.auth_file)) >= AUTH_FILE_MAX:
                raise ConfigError(authfile_open_error(self.auth_file, errno.ENAMETOOLONG))
        if self.sasl:
            if self.protocol != "binary" and self.auth_file is None:
                raise ConfigError("ERROR: You cannot allow the ASCII protocol while using SASL.",
                                  EX_USAGE)
            if self.udp_port:
                raise ConfigError("ERROR: Cannot enable UDP while using binary SASL authentication.",
                                  EX_USAGE)
            if self.sasl_pwdb is not None and len(os.fsencode(self.sasl_pwdb)) >= AUTH_FILE_MAX:
                raise ConfigError(f"MEMCACHED_SASL_PWDB is too long: {self.sasl_pwdb}")
        if self.max_conns <= 0:
            raise ConfigError("Maximum connections must be greater than 0")
        if self.threads <= 0:
            raise ConfigError("Number of threads must be greater than 0")
        if self.threads > THREADS_MAX:
            raise ConfigError(f"Number of threads must be at most {THREADS_MAX}")
        if self.threads > THREADS_WARN:
            warnings.append("WARNING: Setting a high number of worker threads is not recommended.\n"
                            " Set this value to the number of cores in your machine or less.")
        if self.memory_mb < 0:
            raise ConfigError("Memory limit must not be negative", EX_USAGE)
        # The three item size checks in memcached's order, with its words.
        if self.max_item_size < ITEM_SIZE_MIN:
            raise ConfigError("Item max size cannot be less than 1024 bytes.", EX_USAGE)
        if self.max_item_size > self.maxbytes / 2:
            raise ConfigError("Cannot set item size limit higher than 1/2 of memory max.", EX_USAGE)
        if self.max_item_size > ITEM_SIZE_MAX:
            raise ConfigError("Cannot set item size limit higher than a gigabyte.", EX_USAGE)
        if self.reqs_per_event <= 0:
            raise ConfigError("Number of requests per event must be greater than 0")
        if not self.factor > 1.0:
            raise ConfigError("Factor must be greater than 1")
        if self.chunk_size <= 0:
            raise ConfigError("Chunk size must be greater than 0")
        if self.backlog <= 0:
            raise ConfigError("Listen backlog must be greater than 0", EX_USAGE)
        if self.idle_timeout < 0:
            raise ConfigError("idle_timeout must not be negative")
        if not 0 <= self.unix_mask <= 0o777:
            raise ConfigError(f"Invalid unix socket mask {self.unix_mask:o} (octal, at most 777)", EX_USAGE)
        if self.io_engine not in IO_ENGINES:
            raise ConfigError(f"Invalid io engine {self.io_engine!r}: one of {', '.join(IO_ENGINES)}",
                              EX_USAGE)
        if self.unix_socket is not None:
            if not self.unix_socket:
                raise ConfigError("Unix socket path must not be empty", EX_USAGE)
            # sun_path is 108 bytes with its NUL.
            if len(os.fsencode(self.unix_socket)) > 107:
                raise ConfigError(f"Unix socket path too long: {self.unix_socket}", EX_USAGE)
        elif not self.listen:
            raise ConfigError("No interface to listen on", EX_USAGE)
        self._validate_tls()
        if self.metrics_listen is not None:
            parse_metrics_listen(self.metrics_listen)
            if importlib.util.find_spec("prometheus_client") is None:
                raise ConfigError("--metrics-listen needs the prometheus-client package "
                                  "(pip install 'mpcache[metrics]')", EX_USAGE)
        return warnings

    def _validate_tls(self):
        """-Z as memcached checks it at start: a TCP port, then its ssl_init
        (certificates, key, CA file, ciphers) with its messages and EX_USAGE;
        the engine itself loads them (ext/io/tls.c)."""
        for name in ("ssl_chain_cert", "ssl_key", "ssl_ca_cert"):
            value = getattr(self, name)
            if value is not None and len(os.fsencode(value)) >= SSL_PATH_MAX:
                raise ConfigError(f"{name} is too long (at most {SSL_PATH_MAX - 1} bytes)")
        if self.ssl_ciphers is not None and len(self.ssl_ciphers.encode()) >= SSL_CIPHERS_MAX:
            raise ConfigError(f"ssl_ciphers is too long (at most {SSL_CIPHERS_MAX - 1} bytes)")
        if self.ssl_verify_mode not in SSL_LEVELS:
            raise ConfigError("Invalid ssl_verify_mode. Use help to see valid options.")
        if self.ssl_min_version not in SSL_LEVELS:
            raise ConfigError("Invalid ssl_min_version. Use help to see valid options.")
        if not 1024 <= self.ssl_wbuf_size <= SSL_WBUF_MAX:
            # memcached takes 0 and then writes nothing at all
            raise ConfigError(f"ssl_wbuf_size must be 1 to {SSL_WBUF_MAX // 1024} kilobytes")
        if not self.ssl_enabled:
            return
        from . import _engine
        if not _engine.tls_built():
            raise ConfigError("This server is not built with TLS support.", EX_USAGE)
        if self.port == 0:
            raise ConfigError("ERROR: You cannot enable SSL without a TCP port.", EX_USAGE)
        refused = _engine.tls_check(self.engine_settings())
        if refused is not None:
            raise ConfigError(refused, EX_USAGE)

    def tcp_enabled(self):
        # As memcached: -s disables the network, -p 0 disables TCP.
        return self.unix_socket is None and self.port != 0

    def engine_settings(self, bound_port=None):
        """The mp_settings fields, as mpcache._engine.Engine takes them."""
        values = {key: getattr(self, src) if isinstance(src, str) else src(self)
                  for key, src in ENGINE_KEYS.items()}
        if bound_port is not None:
            values["port"] = bound_port
        return values


# Each field of mp_settings (MP_SETTINGS in ext/settings.h) and where its
# value comes from: a Settings attribute, or a function of the Settings.
# The engine refuses a dict that misses a field or has one too many.
ENGINE_KEYS = {
    "maxbytes": "maxbytes",
    "maxconns": "max_conns",
    "port": "port",                 # engine_settings() puts the bound port here
    "udpport": "udp_port",
    "inter": lambda s: ",".join(s.listen) if s.unix_socket is None else "",
    "socketpath": lambda s: s.unix_socket or "",
    "access": "unix_mask",
    "backlog": "backlog",
    "num_threads": "threads",
    "reqs_per_event": "reqs_per_event",
    "item_size_max": "max_item_size",
    "factor": "factor",
    "chunk_size": "chunk_size",
    "verbose": "verbose",
    "idle_timeout": "idle_timeout",
    "use_cas": "use_cas",
    "evict_to_free": "evict_to_free",
    "shutdown_command": "enable_shutdown",
    "flush_enabled": "flush_enabled",
    "maxconns_fast": "maxconns_fast",
    "prefix_delimiter": lambda s: os.fsencode(s.prefix_delimiter)[0],
    "detail_enabled": "detail_enabled",
    "dump_enabled": "dump_enabled",
    "watch_enabled": "watch_enabled",
    "binding_ascii": lambda s: s.protocol == "ascii" or s.auth_file is not None,
    "binding_binary": lambda s: s.protocol == "binary" and s.auth_file is None,
    "sasl": "sasl",
    "sasl_pwdb": lambda s: s.sasl_pwdb or "",
    "auth_file": lambda s: s.auth_file or "",
    "io_engine": "io_engine",
    "ssl_enabled": "ssl_enabled",
    "ssl_chain_cert": lambda s: s.ssl_chain_cert or "",
    "ssl_key": lambda s: s.ssl_key or "",
    "ssl_keyformat": "ssl_keyformat",
    "ssl_verify_mode": "ssl_verify_mode",
    "ssl_ciphers": lambda s: s.ssl_ciphers or "",
    "ssl_ca_cert": lambda s: s.ssl_ca_cert or "",
    "ssl_wbuf_size": "ssl_wbuf_size",
    "ssl_session_cache": "ssl_session_cache",
    "ssl_kernel_tls": "ssl_kernel_tls",
    "ssl_min_version": "ssl_min_version",
}
