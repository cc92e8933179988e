"""Pure builders of the TLS front (edgeProxy nginx): its nginx.conf, its unit, its scripts.

The front is an nginx instance of our own (Debian's nginx binary, our unit, our complete
configuration), not a site in the host's nginx.service: Debian's nginx.conf caps each worker
at 768 connections in its `events` block, which no conf.d file can raise, and a host's own
nginx and its sites stay exactly as they were. Nothing listens on port 80: a redirect would
invite clients to send their token in clear text first.

Our files are a marked unit and a marked directory (config_dir/edge) holding nginx.conf and
the certificate and key, which arrive on stdin (never argv, never plain in the state). When
the deployment installed the nginx package, it says so in the directory, and it disables the
package's own nginx.service (which would take port 80 on every address).
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.config import AppHost, EdgeSettings, ServiceSettings

# The shared pieces of the host scripts (this package's own builders use them alike).
from infra.host_scripts import (
    HEADER,
    MARKER,
    MARKER_FILE,
    UNIT_DIR,
    _fail_function,
    _mark_dir,
    _refuse_foreign,
    ownership_functions,
    q,
)

NGINX = "/usr/sbin/nginx"
INSTALLED_MARK = "nginx-installed-by-shield-orchestrator"


def edge_dir(service: ServiceSettings) -> str:
    return f"{service.config_dir}/edge"


def edge_unit_name(service: ServiceSettings) -> str:
    return f"{service.unit_name}-edge.service"


def _address(host: str) -> str:
    """An address as nginx's listen and server take it: IPv6 in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _listen(host: AppHost, default_server: bool) -> str:
    where = str(host.edge_port)
    if host.edge_address not in (None, "*"):
        where = f"{_address(str(host.edge_address))}:{host.edge_port}"
    return f"    listen {where} ssl http2{' default_server' if default_server else ''};\n"


def nginx_config(host: AppHost, service: ServiceSettings, edge: EdgeSettings) -> str:
    """The front's whole nginx.conf: TLS and HTTP/2, its limits, one upstream over every API
    process of the host, no buffering and long reads for SSE and WebSocket."""
    directory = edge_dir(service)
    upstreams = "".join(
        f"        server {_address(host.bind_address)}:{port} max_fails=1 fail_timeout=2s;\n"
        for port in host.api_ports
    )
    tls = (
        f"    ssl_certificate {directory}/tls.crt;\n    ssl_certificate_key {directory}/tls.key;\n"
    )
    forwarded_host = "$host" if edge.port == 443 else f"$host:{edge.port}"
    return (
        f"{MARKER}\n"
        "daemon off;\n"
        "user www-data;\n"
        "worker_processes auto;\n"
        f"worker_rlimit_nofile {edge.open_files};\n"
        f"pid /run/{service.unit_name}-edge.pid;\n"
        # nginx's error messages quote the request line, query string and all, where an
        # EventSource's ?access_token= is: only crit and worse (none of those) reach the journal.
        "error_log stderr crit;\n"
        # Old workers keep their streams only this long after a reload.
        "worker_shutdown_timeout 30s;\n"
        "\n"
        "events {\n"
        f"    worker_connections {edge.open_files // 2};\n"
        "}\n"
        "\n"
        "http {\n"
        "    server_tokens off;\n"
        "    default_type application/octet-stream;\n"
        # The path alone ($uri), never the query string, which may hold an access token.
        "    log_format shield '$remote_addr [$time_iso8601] \"$request_method $uri"
        " $server_protocol\" $status $body_bytes_sent $request_time';\n"
        f"    access_log /var/log/nginx/{service.unit_name}-access.log shield;\n"
        # The whole header must arrive in time; a longer line than the buffers is refused.
        f"    client_header_timeout {edge.header_timeout_s}s;\n"
        "    client_header_buffer_size 1k;\n"
        f"    large_client_header_buffers 4 {edge.header_line_bytes};\n"
        f"    client_body_timeout {edge.header_timeout_s}s;\n"
        f"    client_max_body_size {edge.max_body_bytes};\n"
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
        f"{upstreams}"
        "        keepalive 64;\n"
        "    }\n"
        "\n"
        # Any name that is not ours: 421 Misdirected Request.
        "    server {\n"
        f"{_listen(host, default_server=True)}"
        "    server_name _;\n"
        f"{tls}"
        "    return 421;\n"
        "    }\n"
        "\n"
        "    server {\n"
        f"{_listen(host, default_server=False)}"
        f"    server_name {' '.join(host.server_names)};\n"
        f"{tls}"
        f"    limit_conn shield_per_client {edge.connections_per_client};\n"
        "    proxy_http_version 1.1;\n"
        f"    proxy_set_header Host {forwarded_host};\n"
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "    proxy_set_header X-Forwarded-Proto https;\n"
        "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $connection_upgrade;\n"
        "    proxy_buffering off;\n"
        "    proxy_cache off;\n"
        "    proxy_connect_timeout 5s;\n"
        f"    proxy_read_timeout {edge.read_timeout_s}s;\n"
        f"    proxy_send_timeout {edge.read_timeout_s}s;\n"
        "    location / {\n"
        "        proxy_pass http://shield_api;\n"
        "    }\n"
        # POST /jobs takes a whole document: its own, larger limit (maxJobBytes).
        "    location = /jobs {\n"
        f"        client_max_body_size {edge.max_job_body_bytes};\n"
        "        proxy_pass http://shield_api;\n"
        "    }\n"
        "    }\n"
        "}\n"
    )


def edge_unit(service: ServiceSettings, edge: EdgeSettings) -> str:
    """The front's unit: Debian's nginx binary with our configuration, in the foreground."""
    conf = f"{edge_dir(service)}/nginx.conf"
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        f"Description=Shield orchestrator TLS front (nginx) for the API processes\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"ExecStartPre={NGINX} -t -q -c {conf}\n"
        f"ExecStart={NGINX} -c {conf}\n"
        f"ExecReload={NGINX} -t -q -c {conf}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        # SIGQUIT: finish the requests in flight (streams for worker_shutdown_timeout).
        "KillSignal=SIGQUIT\n"
        "TimeoutStopSec=40\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        f"LimitNOFILE={edge.open_files}\n"
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


def edge_install(host: str, service: ServiceSettings, install_os_packages: bool) -> str:
    """Make sure Debian's nginx (with HTTP/2 and TLS) is there; install it if allowed, keeping
    the package's own nginx.service from ever starting, and say that we installed it."""
    directory = edge_dir(service)
    policy = "/usr/sbin/policy-rc.d"
    return (
        HEADER
        + _fail_function(host)
        + ownership_functions(service)
        + _refuse_foreign("ours_dir", directory, "configDir")
        + f"install -d -m 0750 -o root -g root {q(directory)}\n"
        + _mark_dir(directory)
        + "\n"
        + f"if [ ! -x {NGINX} ]; then\n"
        + (
            "  export DEBIAN_FRONTEND=noninteractive\n"
            # The package would start its nginx.service at once, on port 80 of every address.
            + f"  if [ ! -e {policy} ]; then\n"
            + f"    trap 'rm -f {policy}' EXIT\n"
            + f"    printf '#!/bin/sh\\nexit 101\\n' > {policy}\n"
            + f"    chmod 0755 {policy}\n"
            + "  fi\n"
            + "  { apt-get update -qq && apt-get install -y -qq nginx; } >&2"
            + ' || fail "nginx is missing and apt-get could not install it"\n'
            + "  systemctl disable --quiet nginx.service 2>/dev/null || true\n"
            + f"  echo {q(MARKER)} > {q(directory + '/' + INSTALLED_MARK)}\n"
            if install_os_packages
            else "  fail \"nginx is missing (install Debian's nginx, or set installOsPackages"
            ' to true, or edgeProxy to none)"\n'
        )
        + "fi\n"
        + f"features=$({NGINX} -V 2>&1)\n"
        + "for module in http_v2_module http_ssl_module; do\n"
        + '  grep -q "with-$module" <<<"$features" || fail "nginx lacks $module"\n'
        + "done\n"
        + f"{NGINX} -v 2>&1\n"
    )


def edge_apply(
    host: str, service: ServiceSettings, config: str, unit: str, revision: Sequence[str]
) -> str:
    """Write the certificate and key (from stdin: the certificate chain, then the key), the
    nginx.conf and the unit; keep the previous set if nginx rejects the new one; then reload
    the front (restart it when its unit changed)."""
    directory = edge_dir(service)
    name = edge_unit_name(service)
    unit_path = f"{UNIT_DIR}/{name}"
    files = ("nginx.conf", "tls.crt", "tls.key")
    return (
        HEADER
        + "".join(f"# {line}\n" for line in revision)
        + _fail_function(host)
        + ownership_functions(service)
        + _refuse_foreign("ours_file", unit_path, "serviceName")
        + _refuse_foreign("ours_dir", directory, "configDir")
        + f"install -d -m 0750 -o root -g root {q(directory)}\n"
        + _mark_dir(directory)
        + "\n"
        + "umask 077\n"
        + f"cd {q(directory)}\n"
        + "received=$(mktemp .received.XXXXXX)\n"
        + "trap 'rm -f \"$received\"' EXIT\n"
        + 'cat > "$received"\n'
        + "sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p'"
        + ' "$received" > tls.crt.next\n'
        + "sed -n '/-----BEGIN [A-Z ]*PRIVATE KEY-----/,/-----END [A-Z ]*PRIVATE KEY-----/p'"
        + ' "$received" > tls.key.next\n'
        + "[ -s tls.crt.next ] || fail 'no certificate on stdin (tlsCertificate)'\n"
        + "[ -s tls.key.next ] || fail 'no private key on stdin (tlsPrivateKey)'\n"
        + f"cat > nginx.conf.next <<'NGINX'\n{config}NGINX\n"
        + f"for file in {' '.join(files)}; do\n"
        + '  if [ -e "$file" ]; then cp -p "$file" "$file.previous"; fi\n'
        + '  mv -f "$file.next" "$file"\n'
        + "done\n"
        + f"if ! checked=$({NGINX} -t -q -c {q(directory + '/nginx.conf')} 2>&1); then\n"
        + f"  for file in {' '.join(files)}; do\n"
        + '    if [ -e "$file.previous" ]; then mv -f "$file.previous" "$file"\n'
        + '    else rm -f "$file"; fi\n'
        + "  done\n"
        + '  fail "nginx refused the front\'s configuration: $checked"\n'
        + "fi\n"
        + f"rm -f {' '.join(f + '.previous' for f in files)}\n"
        + f"cat > {q(unit_path + '.tmp')} <<'UNIT'\n{unit}UNIT\n"
        + f"if cmp -s {q(unit_path + '.tmp')} {q(unit_path)}; then unit_changed=no;"
        + " else unit_changed=yes; fi\n"
        + f"chmod 0644 {q(unit_path + '.tmp')}\n"
        + f"mv -f {q(unit_path + '.tmp')} {q(unit_path)}\n"
        + "systemctl daemon-reload\n"
        + f"systemctl enable --quiet {q(name)}\n"
        + f'if [ "$unit_changed" = no ] && systemctl is-active --quiet {q(name)}; then\n'
        + f"  systemctl reload {q(name)}\n"
        + "else\n"
        + f"  systemctl restart {q(name)}\n"
        + "fi\n"
        + f"systemctl is-active --quiet {q(name)}"
        + f' || fail "the front did not start: $(journalctl --no-pager -n 20 -u {q(name)})"\n'
        + 'echo "front applied $(date -u +%Y-%m-%dT%H:%M:%SZ)"\n'
    )


def edge_remove(service: ServiceSettings) -> str:
    """Stop and remove the front's unit and directory, each only if ours; nginx stays."""
    directory = edge_dir(service)
    name = edge_unit_name(service)
    unit_path = f"{UNIT_DIR}/{name}"
    return (
        HEADER
        + ownership_functions(service)
        + f"if [ -e {q(unit_path)} ] && ours_file {q(unit_path)}; then\n"
        + f"  systemctl disable --now --quiet {q(name)} 2>/dev/null || true\n"
        + f"  rm -f {q(unit_path)} {q(unit_path + '.tmp')}\n"
        + "  systemctl daemon-reload\n"
        + "fi\n"
        + f"if [ -f {q(directory + '/' + MARKER_FILE)} ]; then rm -rf {q(directory)}; fi\n"
        + 'echo "front removed"\n'
    )
