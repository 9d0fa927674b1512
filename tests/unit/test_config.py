from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curacache.server.config import ApiKey, ConfigError, load_config


def test_defaults_are_embedded_sqlite_on_loopback() -> None:
    config = load_config(env={})
    assert (config.host, config.port, config.storage.kind) == ("127.0.0.1", 50051, "sqlite")
    assert not config.auth.enabled and config.loopback


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        'port = 1\n[storage]\nkind = "redis"\nredis_url = "redis://file"\n[limits]\nmax_k = 7\n'
    )
    env = {"CURACACHE_PORT": "2", "CURACACHE_LIMITS__MAX_K": "9", "OTHER": "x"}
    config = load_config(file=file, env=env, overrides={"port": 3, "storage.redis_url": None})
    assert config.port == 3  # flag beats env beats file
    assert config.limits.max_k == 9  # env beats file
    assert config.storage.redis_url == "redis://file"  # an unset flag (None) changes nothing
    assert config.storage.kind == "redis"


def test_api_keys_from_file_and_env(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(
        '[[auth.keys]]\nkey = "a"\ntenants = ["t1", "t2"]\n[[auth.keys]]\nkey = "root"\nadmin = true\n'
    )
    assert load_config(file=file, env={}).auth.keys == (
        ApiKey("a", frozenset({"t1", "t2"})),
        ApiKey("root", frozenset(), True),
    )
    keys = load_config(env={"CURACACHE_AUTH__KEYS": "a=t1,t2;root=*"}).auth.keys
    assert keys == (ApiKey("a", frozenset({"t1", "t2"})), ApiKey("root", frozenset(), True))


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"prot": 1}, "prot"),
        ({"storage.kind": "mongo"}, "storage.kind"),
        ({"port": 70000}, "port"),
        ({"port": "abc"}, "port"),
        ({"host": "0.0.0.0"}, "auth.keys"),  # no auth off loopback
        ({"tls.cert_file": "/x.crt"}, "tls"),
        ({"limits.max_k": 0}, "limits.max_k"),
        ({"limits.max_pending_rpcs": -1}, "limits.max_pending_rpcs"),
        ({"malloc_arenas": -1}, "malloc_arenas"),
        ({"io_threads": 0}, "io_threads"),
        ({"malloc_mmap_threshold": -1}, "malloc_mmap_threshold"),
        ({"limits.max_pending_rpcs": 4000}, "limits.max_pending_rpcs"),  # above the hard one
        ({"limits.max_pending_rpcs_hard": 0}, "limits.max_pending_rpcs_hard"),
        ({"auth.keys": [{"tenants": ["a"]}]}, "auth.keys[0]"),
    ],
)
def test_bad_settings_name_the_setting(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("[", r"\[")):
        load_config(env={}, overrides=overrides)


def test_auth_on_allows_any_address() -> None:
    config = load_config(
        env={}, overrides={"host": "0.0.0.0", "auth.keys": [{"key": "k", "admin": True}]}
    )
    assert config.auth.enabled and not config.loopback


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("port = = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(file=tmp_path / "bad.toml", env={})


def test_cache_section_backends_policies_and_index_params(tmp_path: Path) -> None:
    from curacache.server.cache_wiring import policies_from

    file = tmp_path / "c.toml"
    file.write_text(
        '[cache]\nembedder = "hashing"\ndefault_model = "m"\nconfidence_floor = 0.4\n'
        "[cache.index_params]\ntrain_size = 500\n"
        '[[cache.backends]]\nname = "gpu1"\nbase_url = "http://gpu1:8000"\nmodels = ["m"]\nmax_concurrency = 8\n'
        "[cache.policies.code]\nthreshold = 0.99\n[cache.policies.recipes]\nttl_s = 60\n"
    )
    cache = load_config(file=file, env={}).cache
    assert (cache.embedder, cache.default_model, cache.confidence_floor) == ("hashing", "m", 0.4)
    assert cache.index_params == {"train_size": 500.0}
    (backend,) = cache.backends
    assert (backend.name, backend.base_url, backend.models, backend.max_concurrency) == (
        "gpu1",
        "http://gpu1:8000",
        ("m",),
        8,
    )
    policies = policies_from(cache)
    assert policies["code"].threshold == 0.99 and policies["recipes"].ttl_s == 60
    assert policies["recipes"].threshold == policies["default"].threshold
    env = load_config(env={"CURACACHE_CACHE__BACKENDS": "a=http://a:1;b=http://b:2"}).cache
    assert [b.name for b in env.backends] == ["a", "b"] and load_config(
        env={}
    ).cache.confidence_floor is None


@pytest.mark.parametrize(
    "text,field",
    [
        ('[[cache.backends]]\nname = "x"\n', "cache.backends[0]"),
        (
            '[[cache.backends]]\nname = "x"\nbase_url = "http://x:1"\nmax_concurrency = 0\n',
            "cache.backends[0]",
        ),
        ("[cache.policies.code]\nthreshold = 2.0\n", "cache.policies.code.threshold"),
    ],
)
def test_bad_cache_settings_name_the_setting(tmp_path: Path, text: str, field: str) -> None:
    from curacache.server.cache_wiring import policies_from

    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as err:
        policies_from(load_config(file=file, env={}).cache)
    assert field in str(err.value)


def test_cache_calibration_knobs_are_checked() -> None:
    from curacache.server.cache_wiring import build_cache

    config = load_config(env={}, overrides={"cache.verify_hits": 1.5, "cache.embedder": "hashing"})
    with pytest.raises(ConfigError, match=r"cache\.verify_hits"):
        build_cache(config.cache, None)  # type: ignore[arg-type]
