"""Stack config validation: defaults from the original design, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import StackConfigError, load
from service.core.settings import Settings
from tests.infra.support import BASE_CONFIG, SSH_KEY, config_source

SECRETS = {"sshPrivateKey": SSH_KEY}


def test_defaults_follow_the_original_role() -> None:
    defaults_only = {key: value for key, value in BASE_CONFIG.items() if key != "packageSource"}
    config, _ = load(config_source(defaults_only, SECRETS))
    assert config.redis.url == "redis://127.0.10.48:6379/0"
    assert [(spec.stream, spec.group, spec.start_id) for spec in config.redis.groups] == [
        ("shield:ingestion_queue", "lightrag-workers", "0"),
        ("shield:ingestion_queue", "metrics-collector", "$"),
        ("shield:events", "ag-ui-frontend", "$"),
        ("shield:events", "power-ui-frontend", "$"),
        ("shield:events", "dashboard-frontend", "$"),
        ("shield:events", "metrics-collector", "$"),
    ]
    app = config.app
    assert (app.stream_maxlen, app.batch_size, app.block_ms, app.retry_attempts) == (
        10000,
        10,
        5000,
        3,
    )
    target = config.topology.app_hosts[0].target
    assert target.user == "root" and not target.use_sudo
    assert config.install_os_packages is True
    assert config.drop_streams_on_destroy is False
    assert config.packages.source == "wheelhouse"


def test_groups_accept_json_or_commas() -> None:
    config, _ = load(
        config_source(
            {
                **BASE_CONFIG,
                "eventGroups": '["a", "b"]',
                "ingestionGroups": "w, m",
                "workerGroup": "w",
            },
            SECRETS,
        )
    )
    assert config.app.event_groups == ("a", "b")
    assert config.app.ingestion_groups == ("w", "m")


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
        ({"batchSize": "0"}, "shield-orchestrator:batchSize: Input should be greater than 0"),
        ({"blockMs": "soon"}, "shield-orchestrator:blockMs: Input should be a valid integer"),
        ({"workerGroup": "nobody"}, "shield-orchestrator:workerGroup: Value error, must be one"),
        ({"redisUrl": "http://h:6379/0"}, "shield-orchestrator:redisUrl: Value error, must start"),
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
    with pytest.raises(StackConfigError) as error:
        load(config_source({**BASE_CONFIG, **override}, SECRETS))
    assert str(error.value).startswith(message)


def test_missing_ssh_key_names_the_secret_key() -> None:
    with pytest.raises(StackConfigError, match="shield-orchestrator:sshPrivateKey: is required"):
        load(config_source(BASE_CONFIG, {}))


def test_the_service_settings_are_built_and_validated_by_the_service_model() -> None:
    config, _ = load(config_source({**BASE_CONFIG, "batchSize": "25", "ssePingS": "2.5"}, SECRETS))
    assert isinstance(config.app, Settings)
    assert (config.app.batch_size, config.app.sse_ping_s) == (25, 2.5)
    assert config.app.redis_password is None and config.app.api_token is None


def test_this_machines_environment_does_not_leak_into_the_deployed_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIELD_BATCH_SIZE", "99")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SHIELD_BLOCK_MS=7\n")
    config, _ = load(config_source(BASE_CONFIG, SECRETS))
    assert (config.app.batch_size, config.app.block_ms) == (10, 5000)
    assert type(config.app) is Settings


def test_the_worker_group_is_named_by_its_key_not_its_position() -> None:
    config, _ = load(
        config_source(
            {**BASE_CONFIG, "ingestionGroups": "metrics, workers", "workerGroup": "workers"},
            SECRETS,
        )
    )
    starts = {
        spec.group: spec.start_id
        for spec in config.redis.groups
        if spec.stream == "shield:ingestion_queue"
    }
    assert starts == {"metrics": "$", "workers": "0"}


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
PINNED = {key: value for key, value in BASE_CONFIG.items() if key != "allowUnpinnedHostKeys"} | {
    "orchestratorHostKey": KEY,
    "redisHostKey": KEY,
}


def test_an_open_api_beyond_loopback_needs_a_token_naming_the_key() -> None:
    open_api = {**PINNED, "serviceBindAddress": "0.0.0.0"}
    with pytest.raises(StackConfigError) as error:
        load(config_source(open_api, SECRETS))
    assert str(error.value).startswith(
        "shield-orchestrator:apiToken: is required: the API on 127.0.10.8 listens on 0.0.0.0"
    )
    config, _ = load(config_source(open_api, {**SECRETS, "apiToken": "t"}))
    assert config.topology.app_hosts[0].bind_address == "0.0.0.0"
    loopback, _ = load(config_source({**PINNED, "serviceBindAddress": "127.0.0.1"}, SECRETS))
    assert loopback.topology.app_hosts[0].bind_address == "127.0.0.1"


@pytest.mark.parametrize(
    ("unpinned", "message"),
    [
        ("orchestratorHostKey", "shield-orchestrator:orchestratorHostKey: host 127.0.10.8 has"),
        ("redisHostKey", "shield-orchestrator:redisHostKey: host 127.0.10.48 has no pinned"),
    ],
)
def test_an_unpinned_host_key_fails_unless_the_stack_allows_it(unpinned: str, message: str) -> None:
    stack = {key: value for key, value in PINNED.items() if key != unpinned}
    with pytest.raises(StackConfigError) as error:
        load(config_source(stack, SECRETS))
    assert str(error.value).startswith(message)
    assert "or allowUnpinnedHostKeys to true" in str(error.value)
    config, _ = load(config_source({**stack, "allowUnpinnedHostKeys": "true"}, SECRETS))
    assert config.topology.hosts()["127.0.10.8"].host_key in (None, KEY)


def test_a_listed_host_without_a_key_names_its_entry() -> None:
    stack = {
        **PINNED,
        "workerHosts": '[{"host": "127.0.10.9"}]',
    }
    with pytest.raises(StackConfigError) as error:
        load(config_source(stack, SECRETS))
    assert str(error.value).startswith(
        "shield-orchestrator:workerHosts: host 127.0.10.9 has no pinned SSH host key:"
        " set hostKey in its workerHosts entry (or hostKeys)"
    )
