"""The settings path: MP_SETTINGS (ext/settings.h) -> mp_setting_descs ->
mpcache._engine, and config.ENGINE_KEYS from the Python side.

The C struct is reached by name and offset only, so these check that every
field, whatever its C type, lands where "stats settings" reads it, and that
the two sides cannot drift apart without a start-up failure.
"""

import dataclasses

import pytest

from mpcache.config import ENGINE_KEYS, MB, Settings

_engine = pytest.importorskip("mpcache._engine")
Engine, settings_table = _engine.Engine, _engine.settings_table

# Python's defaults differ from C's on purpose here: a channel per CPU, and
# io_uring when the kernel allows (the C default is what an engine created
# without settings, as the C tests do, runs).
DIFFERENT_DEFAULTS = {"num_threads", "io_engine"}


def settings_stats(eng):
    text = eng.stats(b"settings").decode()
    return dict(line.split(" ", 2)[1:] for line in text.split("\r\n") if line.startswith("STAT "))


def test_engine_keys_name_every_field_once():
    names = [name for name, _, _ in settings_table()]
    assert len(names) == len(set(names))
    assert set(ENGINE_KEYS) == set(names)


def test_engine_keys_read_settings_attributes():
    s = Settings()
    fields = {f.name for f in dataclasses.fields(Settings)}
    for key, src in ENGINE_KEYS.items():
        if isinstance(src, str):
            assert src in fields or isinstance(getattr(Settings, src, None), property), key
        else:
            src(s)


def test_python_defaults_agree_with_c():
    c = {name: default for name, default, _ in settings_table()}
    py = Settings().engine_settings()
    assert {k: py[k] for k in c if k not in DIFFERENT_DEFAULTS} == \
        {k: c[k] for k in c if k not in DIFFERENT_DEFAULTS}


def test_every_field_reaches_the_engine():
    """Values unlike the defaults, one per field, read back from the engine."""
    s = Settings(port=4242, udp_port=4243, listen=["127.0.0.2", "::1"], unix_mask=0o640,
                 threads=3, memory_mb=128, max_conns=77, max_item_size=512 * 1024, verbose=2,
                 enable_shutdown=True, reqs_per_event=7, use_cas=False, evict_to_free=False,
                 flush_enabled=False, backlog=99, factor=1.5, chunk_size=64, idle_timeout=9,
                 maxconns_fast=False, io_engine="epoll", protocol="ascii")
    eng = Engine(s.engine_settings())
    try:
        st = settings_stats(eng)
        own = eng.stats(b"mpcache").decode()
        assert eng.nchannels == 3
    finally:
        eng.close()
    assert st["maxbytes"] == str(128 * MB)
    assert (st["maxconns"], st["tcpport"], st["udpport"]) == ("77", "4242", "4243")
    assert (st["inter"], st["domain_socket"], st["umask"]) == ("127.0.0.2,::1", "NULL", "640")
    assert (st["verbosity"], st["tcp_backlog"], st["reqs_per_event"]) == ("2", "99", "7")
    assert (st["item_size_max"], st["growth_factor"], st["chunk_size"]) == ("524288", "1.50", "64")
    assert (st["idle_timeout"], st["binding_protocol"]) == ("9", "ascii")
    assert "STAT mpcache_io_engine epoll\r\n" in own
    assert (st["cas_enabled"], st["evictions"], st["shutdown_command"]) == ("no", "off", "yes")
    assert (st["flush_enabled"], st["maxconns_fast"]) == ("no", "no")


def test_unix_socket_fields():
    eng = Engine(Settings(unix_socket="/tmp/mpcache-test.sock", threads=1).engine_settings())
    try:
        st = settings_stats(eng)
    finally:
        eng.close()
    assert (st["domain_socket"], st["inter"]) == ("/tmp/mpcache-test.sock", "NULL")


def test_bound_port_replaces_the_asked_one():
    assert Settings(port=-1).engine_settings(bound_port=40000)["port"] == 40000


@pytest.mark.parametrize("change", [{"no_such_setting": 1}, {"maxconns": None}],
                         ids=["unknown", "missing"])
def test_unknown_or_missing_keys_are_refused(change):
    values = Settings(threads=1).engine_settings()
    for key, value in change.items():
        if value is None:
            del values[key]
        else:
            values[key] = value
    with pytest.raises(KeyError, match=next(iter(change))):
        Engine(values)


@pytest.mark.parametrize("key,value,error", [
    ("maxconns", 2 ** 40, OverflowError),
    ("item_size_max", -1, OverflowError),
    ("maxconns", "5", TypeError),
])
def test_values_the_field_cannot_hold_are_refused(key, value, error):
    values = Settings(threads=1).engine_settings()
    values[key] = value
    with pytest.raises(error):
        Engine(values)


def test_long_strings_are_cut_to_their_field():
    """inter is only shown, and 32 addresses outgrow its 255 bytes."""
    listen = [f"127.0.0.{i}" for i in range(1, 33)]
    eng = Engine(Settings(listen=listen, threads=1).engine_settings())
    try:
        inter = settings_stats(eng)["inter"]
    finally:
        eng.close()
    assert inter == ",".join(listen)[:255]


def test_no_settings_means_the_c_defaults():
    eng = Engine()
    try:
        st = settings_stats(eng)
    finally:
        eng.close()
    c = {name: default for name, default, _ in settings_table()}
    assert (st["maxbytes"], st["maxconns"]) == (str(c["maxbytes"]), str(c["maxconns"]))
