"""Settings from the environment: Sentinel addresses and the errors that name the variable."""

from __future__ import annotations

import pytest

from service.core.settings import ConfigError, load_settings


def test_sentinels_come_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIELD_REDIS_SENTINELS", "127.0.10.48:26379, 127.0.10.49:26379,[::1]:26380")
    settings = load_settings(_env_file=None)
    assert settings.sentinel_addresses == [
        ("127.0.10.48", 26379),
        ("127.0.10.49", 26379),
        ("::1", 26380),
    ]
    assert settings.redis_sentinel_master == "shield"
    assert settings.task_replicas == 0


@pytest.mark.parametrize("value", ["127.0.10.48", "host:0", "host:port", ":26379", "h:70000"])
def test_a_bad_sentinel_address_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SHIELD_REDIS_SENTINELS", value)
    with pytest.raises(ConfigError, match="^SHIELD_REDIS_SENTINELS: .*is not host:port"):
        load_settings(_env_file=None)


def test_a_negative_replica_count_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIELD_TASK_REPLICAS", "-1")
    with pytest.raises(ConfigError, match="^SHIELD_TASK_REPLICAS: "):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHIELD_REPLAY_PAGE_BYTES", "100"),
        ("SHIELD_REPLAY_PAGE_BYTES", "lots"),
        ("SHIELD_REPLAY_CONCURRENCY", "0"),
        ("SHIELD_REPLAY_CONCURRENCY", "1000"),
        ("SHIELD_WS_SEND_TIMEOUT_S", "0"),
        ("SHIELD_WS_SEND_TIMEOUT_S", "3600"),
    ],
)
def test_a_bad_replay_or_send_limit_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_settings(_env_file=None)


def test_replay_and_send_limits_have_bounded_defaults() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.replay_page_bytes, settings.replay_concurrency) == (262_144, 8)
    assert settings.ws_send_timeout_s == 30.0
