"""Stack config validation: defaults from the original design, errors that name the key."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, load
from tests.infra.support import BASE_CONFIG, SSH_KEY, config_source

SECRETS = {"sshPrivateKey": SSH_KEY}


def test_defaults_follow_the_original_role() -> None:
    defaults_only = {key: value for key, value in BASE_CONFIG.items() if key != "packageSource"}
    config, _ = load(config_source(defaults_only, SECRETS))
    assert config.redis.url == "redis://127.0.10.48:6379/0"
    assert config.redis.streams == {
        "shield:ingestion_queue": ("lightrag-workers", "metrics-collector"),
        "shield:events": (
            "ag-ui-frontend",
            "power-ui-frontend",
            "dashboard-frontend",
            "metrics-collector",
        ),
    }
    assert config.redis.maxlen == 10000
    assert (config.service.batch_size, config.service.block_ms, config.service.retry_attempts) == (
        10,
        5000,
        3,
    )
    assert config.orchestrator.user == "root" and not config.orchestrator.use_sudo
    assert config.install_os_packages is True
    assert config.drop_streams_on_destroy is False
    assert config.packages.source == "wheelhouse"


def test_groups_accept_json_or_commas() -> None:
    config, _ = load(
        config_source(
            {**BASE_CONFIG, "eventGroups": '["a", "b"]', "ingestionGroups": "w, m"}, SECRETS
        )
    )
    assert config.redis.event_groups == ("a", "b")
    assert config.redis.ingestion_groups == ("w", "m")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"orchestratorHost": ""}, "shield-orchestrator:orchestratorHost: is required"),
        (
            {"redisHost": "not a host!"},
            "shield-orchestrator:redisHost: not a hostname or IP address",
        ),
        ({"redisPort": "abc"}, "shield-orchestrator:redisPort: must be an integer, got 'abc'"),
        ({"redisPort": "70000"}, "shield-orchestrator:redisPort: must be between 1 and 65535"),
        ({"redisDb": "16"}, "shield-orchestrator:redisDb: must be between 0 and 15"),
        ({"batchSize": "0"}, "shield-orchestrator:batchSize: must be between 1"),
        ({"eventGroups": "[]"}, "shield-orchestrator:eventGroups: must be a non-empty list"),
        ({"eventGroups": '["a", "a"]'}, "shield-orchestrator:eventGroups: names must be unique"),
        (
            {"streamEvents": "shield:ingestion_queue"},
            "shield-orchestrator:streamEvents: must differ",
        ),
        ({"sshUser": "Root User"}, "shield-orchestrator:sshUser: invalid value"),
        ({"installDir": "relative/path"}, "shield-orchestrator:installDir: invalid value"),
        (
            {"packageSource": "magic"},
            "shield-orchestrator:packageSource: must be one of wheelhouse, index",
        ),
        (
            {"installOsPackages": "maybe"},
            "shield-orchestrator:installOsPackages: must be true or false",
        ),
        (
            {"orchestratorHostKey": "not a key"},
            "shield-orchestrator:orchestratorHostKey: invalid value",
        ),
        (
            {"redisUrl": "redis://user:pw@h:6379/0"},
            "shield-orchestrator:redisUrl: must not hold credentials",
        ),
        ({"targetPythonVersion": "3"}, "shield-orchestrator:targetPythonVersion: invalid value"),
    ],
)
def test_bad_values_name_the_key(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(config_source({**BASE_CONFIG, **override}, SECRETS))
    assert str(error.value).startswith(message)


def test_missing_ssh_key_names_the_secret_key() -> None:
    with pytest.raises(ConfigError, match="shield-orchestrator:sshPrivateKey: is required"):
        load(config_source(BASE_CONFIG, {}))
