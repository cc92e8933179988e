"""The TLS front's settings and builders: exact nginx.conf and unit text, shellcheck on its
scripts, and the stack keys (edgeProxy, tlsCertificate, tlsPrivateKey) failing by name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra import edge_scripts, host_scripts
from infra.config import (
    _PEM_CERTIFICATE,
    _PEM_PRIVATE_KEY,
    StackConfigError,
    check_pem,
    load,
)
from tests.infra.support import (
    BASE_CONFIG,
    SSH_KEY,
    TLS,
    TLS_SECRETS,
    config_source,
    plain_strings,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "service", root / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


SECRETS = {"sshPrivateKey": SSH_KEY, "apiToken": "t"}
FRONT = {
    **{key: value for key, value in BASE_CONFIG.items() if key != "edgeProxy"},
    "serviceBindAddress": "127.0.1.8",
    "apiProcesses": "2",
}
CONFIG, _ = load(config_source(FRONT, {**SECRETS, **TLS_SECRETS}))
HOST = CONFIG.topology.app_hosts[0]
assert CONFIG.edge is not None
EDGE = CONFIG.edge


def test_the_front_is_the_default_and_the_endpoint_is_https() -> None:
    assert (HOST.edge_address, HOST.edge_port, HOST.server_names) == (
        "127.0.10.8",
        443,
        ("127.0.10.8",),
    )
    assert HOST.base_urls == ("https://127.0.10.8",)
    assert HOST.health_urls == (
        "http://127.0.1.8:8000/health/detailed",
        "http://127.0.1.8:8001/health/detailed",
    )
    assert (EDGE.max_body_bytes, EDGE.header_timeout_s, EDGE.open_files) == (65536, 10, 65536)
    # POST /jobs takes a whole document: 32 MiB.
    assert EDGE.max_job_body_bytes == 32 * 1024 * 1024


def test_a_stack_without_a_certificate_fails_naming_tlsCertificate() -> None:
    with pytest.raises(StackConfigError) as error:
        load(config_source(FRONT, SECRETS))
    assert str(error.value).startswith("shield-orchestrator:tlsCertificate: is required for")
    assert "edgeProxy to none" in str(error.value)
    only_certificate = {**SECRETS, "tlsCertificate": TLS.certificate}
    with pytest.raises(StackConfigError, match="^shield-orchestrator:tlsPrivateKey: is required"):
        load(config_source(FRONT, only_certificate))


def test_edgeProxy_none_needs_no_certificate_and_keeps_per_process_urls() -> None:  # noqa: N802
    config, secrets = load(config_source({**FRONT, "edgeProxy": "none"}, SECRETS))
    (host,) = config.topology.app_hosts
    assert config.edge is None and secrets.tls_certificate is None
    assert host.base_urls == ("http://127.0.10.8:8000", "http://127.0.10.8:8001")
    with pytest.raises(StackConfigError, match="^shield-orchestrator:edgeProxy: must be one of"):
        load(config_source({**FRONT, "edgeProxy": "caddy"}, SECRETS))


def test_behind_the_front_the_api_must_listen_on_loopback() -> None:
    with pytest.raises(StackConfigError) as error:
        load(config_source({**FRONT, "serviceBindAddress": "0.0.0.0"}, {**SECRETS, **TLS_SECRETS}))
    assert str(error.value).startswith(
        "shield-orchestrator:serviceBindAddress: the API on 127.0.10.8 must listen on loopback"
    )
    default, _ = load(
        config_source(
            {k: v for k, v in FRONT.items() if k != "serviceBindAddress"},
            {**SECRETS, **TLS_SECRETS},
        )
    )
    assert default.topology.app_hosts[0].bind_address == "127.0.0.1"


def test_an_open_front_needs_a_token() -> None:
    with pytest.raises(StackConfigError, match="^shield-orchestrator:apiToken: is required: the"):
        load(
            config_source(
                {**FRONT, "edgeListenAddress": "*"}, {"sshPrivateKey": SSH_KEY, **TLS_SECRETS}
            )
        )
    # On a loopback address (the lab's), the front is as closed as the API was.
    load(config_source(FRONT, {"sshPrivateKey": SSH_KEY, **TLS_SECRETS}))


def test_server_names_and_listen_addresses_come_from_the_stack() -> None:
    stack = {
        **{key: value for key, value in FRONT.items() if key != "orchestratorHost"},
        "orchestrators": json.dumps(
            [{"host": "127.0.10.8", "bindAddress": "127.0.1.8", "listenAddress": "*"}]
        ),
        "serverNames": json.dumps(["api.example.org", "api.example.org:8443", "[::1]:443"]),
        "edgePort": "8443",
    }
    config, _ = load(config_source(stack, {**SECRETS, **TLS_SECRETS}))
    (host,) = config.topology.app_hosts
    assert (host.edge_address, host.server_names) == ("*", ("api.example.org", "[::1]"))
    assert host.base_urls == ("https://127.0.10.8:8443",)
    with pytest.raises(StackConfigError, match="^shield-orchestrator:edgeListenAddress: 127"):
        load(config_source({**FRONT, "edgeListenAddress": "no such;"}, {**SECRETS, **TLS_SECRETS}))


@pytest.mark.parametrize(
    ("key", "text", "pattern", "what"),
    [
        ("tlsCertificate", TLS.private_key, _PEM_CERTIFICATE, "a certificate"),
        ("tlsPrivateKey", "not a key", _PEM_PRIVATE_KEY, "a private key"),
        ("tlsPrivateKey", "", _PEM_PRIVATE_KEY, "a private key"),
    ],
)
def test_a_value_that_is_not_pem_fails_naming_its_key(
    key: str, text: str, pattern: object, what: str
) -> None:
    with pytest.raises(StackConfigError) as error:
        check_pem(key, text, pattern, what)  # type: ignore[arg-type]
    assert str(error.value) == f"shield-orchestrator:{key}: is not {what} in PEM form"
    assert check_pem("tlsCertificate", TLS.certificate, _PEM_CERTIFICATE, "x") == TLS.certificate
    assert check_pem("tlsPrivateKey", TLS.private_key, _PEM_PRIVATE_KEY, "x") == TLS.private_key


def test_nginx_config_text() -> None:
    assert edge_scripts.nginx_config(HOST, CONFIG.service, EDGE) == (
        host_scripts.MARKER + "\n"
        "daemon off;\n"
        "user www-data;\n"
        "worker_processes auto;\n"
        "worker_rlimit_nofile 65536;\n"
        "pid /run/shield-orchestrator-edge.pid;\n"
        "error_log stderr crit;\n"
        "worker_shutdown_timeout 30s;\n"
        "\n"
        "events {\n"
        "    worker_connections 32768;\n"
        "}\n"
        "\n"
        "http {\n"
        "    server_tokens off;\n"
        "    default_type application/octet-stream;\n"
        "    log_format shield '$remote_addr [$time_iso8601] \"$request_method $uri"
        " $server_protocol\" $status $body_bytes_sent $request_time';\n"
        "    access_log /var/log/nginx/shield-orchestrator-access.log shield;\n"
        "    client_header_timeout 10s;\n"
        "    client_header_buffer_size 1k;\n"
        "    large_client_header_buffers 4 16384;\n"
        "    client_body_timeout 10s;\n"
        "    client_max_body_size 65536;\n"
        "    keepalive_timeout 75s;\n"
        "    send_timeout 60s;\n"
        "    reset_timedout_connection on;\n"
        "    limit_conn_zone $binary_remote_addr zone=shield_per_client:10m;\n"
        "    limit_conn_status 429;\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        "    ssl_prefer_server_ciphers off;\n"
        "    ssl_session_cache shared:shield_tls:10m;\n"
        "    ssl_session_timeout 1h;\n"
        "    map $http_upgrade $connection_upgrade {\n"
        "        default upgrade;\n"
        "        '' '';\n"
        "    }\n"
        "\n"
        "    upstream shield_api {\n"
        "        server 127.0.1.8:8000 max_fails=1 fail_timeout=2s;\n"
        "        server 127.0.1.8:8001 max_fails=1 fail_timeout=2s;\n"
        "        keepalive 64;\n"
        "    }\n"
        "\n"
        "    server {\n"
        "    listen 127.0.10.8:443 ssl http2 default_server;\n"
        "    server_name _;\n"
        "    ssl_certificate /etc/shield-orchestrator/edge/tls.crt;\n"
        "    ssl_certificate_key /etc/shield-orchestrator/edge/tls.key;\n"
        "    return 421;\n"
        "    }\n"
        "\n"
        "    server {\n"
        "    listen 127.0.10.8:443 ssl http2;\n"
        "    server_name 127.0.10.8;\n"
        "    ssl_certificate /etc/shield-orchestrator/edge/tls.crt;\n"
        "    ssl_certificate_key /etc/shield-orchestrator/edge/tls.key;\n"
        "    limit_conn shield_per_client 1100;\n"
        "    proxy_http_version 1.1;\n"
        "    proxy_set_header Host $host;\n"
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "    proxy_set_header X-Forwarded-Proto https;\n"
        "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $connection_upgrade;\n"
        "    proxy_buffering off;\n"
        "    proxy_cache off;\n"
        "    proxy_connect_timeout 5s;\n"
        "    proxy_read_timeout 3600s;\n"
        "    proxy_send_timeout 3600s;\n"
        "    location / {\n"
        "        proxy_pass http://shield_api;\n"
        "    }\n"
        "    location = /jobs {\n"
        "        client_max_body_size 33554432;\n"
        "        proxy_pass http://shield_api;\n"
        "    }\n"
        "    }\n"
        "}\n"
    )


def test_edge_unit_text() -> None:
    assert edge_scripts.edge_unit(CONFIG.service, EDGE) == (
        host_scripts.MARKER + "\n"
        "[Unit]\n"
        "Description=Shield orchestrator TLS front (nginx) for the API processes\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        "ExecStartPre=/usr/sbin/nginx -t -q -c /etc/shield-orchestrator/edge/nginx.conf\n"
        "ExecStart=/usr/sbin/nginx -c /etc/shield-orchestrator/edge/nginx.conf\n"
        "ExecReload=/usr/sbin/nginx -t -q -c /etc/shield-orchestrator/edge/nginx.conf\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "KillSignal=SIGQUIT\n"
        "TimeoutStopSec=40\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "LimitNOFILE=65536\n"
        "ProtectSystem=full\n"
        "ProtectHome=yes\n"
        "PrivateTmp=yes\n"
        "PrivateDevices=yes\n"
        "ProtectKernelTunables=yes\n"
        "ProtectKernelModules=yes\n"
        "ProtectControlGroups=yes\n"
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"
        "RestrictNamespaces=yes\n"
        "LockPersonality=yes\n"
        "\n[Install]\nWantedBy=multi-user.target\n"
    )


def test_the_api_unit_behind_the_front_limits_concurrency_and_raises_open_files() -> None:
    unit = host_scripts.api_unit(CONFIG.service, HOST.bind_address)
    assert (
        " --host 127.0.1.8 --port %i --timeout-graceful-shutdown 10 --limit-concurrency 2048\n"
        in unit
    )
    assert "LimitNOFILE=65536\n" in unit


SCRIPTS = {
    "edge_install": edge_scripts.edge_install("h", CONFIG.service, True),
    "edge_install_no_packages": edge_scripts.edge_install("h", CONFIG.service, False),
    "edge_apply": edge_scripts.edge_apply(
        "h",
        CONFIG.service,
        edge_scripts.nginx_config(HOST, CONFIG.service, EDGE),
        edge_scripts.edge_unit(CONFIG.service, EDGE),
        ["front abc"],
    ),
    "edge_remove": edge_scripts.edge_remove(CONFIG.service),
    "host_checks_with_front": host_scripts.HEADER
    + host_scripts.host_checks("h", CONFIG.service, "127.0.1.8", [8000, 8001], ("127.0.10.8", 443)),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_shellcheck_passes(name: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: run `make deps`")
    result = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=SCRIPTS[name], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_the_key_travels_on_stdin_never_in_the_script() -> None:
    script = SCRIPTS["edge_apply"]
    assert "PRIVATE KEY-----\n" not in script and 'cat > "$received"' in script
    assert "tls.key" in script


def test_the_front_is_a_component_after_the_service_with_its_key_secret(
    tmp_path: Path, source_root: Path
) -> None:
    stack = {**FRONT, "apiProcesses": "1"}
    run = run_program(stack, tmp_path / "build", source_root, {**SECRETS, **TLS_SECRETS})
    assert run.registered["orchestrator-edge"].type == "shield:infra:EdgeProxy"
    for child in ("orchestrator-edge-install", "orchestrator-edge-config"):
        assert run.registered[child].parent == run.urns["orchestrator-edge"]
    assert run.depends_on("orchestrator-edge-install", "orchestrator-preflight")
    assert run.depends_on("orchestrator-edge-config", "orchestrator-edge-install")
    config = run.registered["orchestrator-edge-config"]
    # A new upstream list only once the processes it names have started.
    assert any(urn.endswith("::orchestrator-api-8000") for urn in config.dependencies)
    key_line = TLS.private_key.splitlines()[1]
    assert not [text for text in plain_strings(config.raw) if key_line in text]
    assert key_line in config.inputs["stdin"]
    assert "ssl http2" in config.inputs["create"]
    assert run.outputs["apiEndpoints"] == ["https://127.0.10.8"]


def test_the_lab_ca_is_made_once_with_private_keys_0600(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    script = str(REPO_ROOT / "scripts" / "lab-tls")
    subprocess.run([script, str(directory)], check=True, timeout=60)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in directory.iterdir()}
    assert modes == {
        "ca.crt": "0o644",
        "ca.key": "0o600",
        "server.crt": "0o600",
        "server.key": "0o600",
    }
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", directory / "ca.crt", directory / "server.crt"],
        capture_output=True,
        text=True,
    )
    assert verified.stdout.strip().endswith("server.crt: OK")
    names = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", directory / "server.crt"],
        capture_output=True,
        text=True,
    ).stdout
    assert "IP Address:127.0.10.8" in names and "IP Address:127.0.10.9" in names
    # The stack's checks accept what it made; a second run keeps the same CA.
    certificate = (directory / "server.crt").read_text()
    check_pem("tlsCertificate", certificate, _PEM_CERTIFICATE, "a certificate")
    check_pem("tlsPrivateKey", (directory / "server.key").read_text(), _PEM_PRIVATE_KEY, "a key")
    subprocess.run([script, str(directory)], check=True, timeout=60)
    assert (directory / "server.crt").read_text() == certificate
