"""Pure builders of the scripts that set up replication and Sentinel (redisMode: sentinel).

The password reaches Redis and the sentinels on standard input only: `redis-cli -x` takes
the last argument from stdin, and the sentinel's config file is written with the shell's
printf builtin, so it is on no command line. Sentinel rewrites its own config file as it
learns the topology; a step that runs again keeps that file when it already monitors the
master, so a redeploy never points the sentinels back at a primary that was failed over.
"""

from __future__ import annotations

from infra.config import RedisSettings
from infra.host_scripts import (
    HEADER,
    MARKER,
    MARKER_FILE,
    UNIT_DIR,
    _fail_function,
    dir_is_ours,
    foreign,
    q,
    redis_cli_prelude,
)

SENTINEL_DIR = "/var/lib/shield-sentinel"
# What a sentinel step wrote there before the directory carried our marker.
SENTINEL_FILES = ("sentinel-*.conf", "sentinel-*.conf.*")
# How long a primary may be silent before the sentinels call it down, and give up a failover.
DOWN_AFTER_MS = 3000
FAILOVER_TIMEOUT_MS = 10000
REPLICA_SYNC_TIMEOUT_S = 60


def replication_apply(host: str, redis: RedisSettings, replica_of: tuple[str, int] | None) -> str:
    """Give a data node masterauth (any node may become a replica) and, for a replica,
    `replicaof` the primary; persist both with CONFIG REWRITE.

    A replica that Sentinel promoted (a master with replicas of its own) is left as it is.
    """
    script = (
        HEADER
        + redis_cli_prelude(host, redis)
        + '[ -n "${REDISCLI_AUTH:-}" ] || fail "sentinel mode needs redisPassword"\n'
        + "answer=$(printf '%s' \"$REDISCLI_AUTH\" | rcli -x CONFIG SET masterauth 2>&1)\n"
        + '[ "$answer" = OK ] || fail "CONFIG SET masterauth: $answer"\n'
        # The address the primary and the sentinels list for this node when it replicates:
        # the stack's, not the source address of its connection (127.0.0.1 on one machine).
        + f"answer=$(rcli CONFIG SET replica-announce-ip {q(redis.host)} 2>&1)\n"
        + '[ "$answer" = OK ] || fail "CONFIG SET replica-announce-ip: $answer"\n'
    )
    if replica_of is not None:
        primary, port = replica_of
        script += (
            "role=$(rcli --raw INFO replication | tr -d '\\r')\n"
            + "if printf '%s\\n' \"$role\" | grep -qx role:master"
            + " && ! printf '%s\\n' \"$role\" | grep -qx connected_slaves:0; then\n"
            + '  echo "promoted by sentinel: left as primary" >&2\n'
            + "else\n"
            + f"  answer=$(rcli REPLICAOF {q(primary)} {port} 2>&1)\n"
            + '  case "$answer" in OK*) ;; *) fail "REPLICAOF: $answer" ;; esac\n'
            + f"  deadline=$((SECONDS + {REPLICA_SYNC_TIMEOUT_S}))\n"
            + "  until rcli --raw INFO replication | tr -d '\\r'"
            + " | grep -qx master_link_status:up; do\n"
            + '    [ "$SECONDS" -lt "$deadline" ]'
            + f' || fail "no link to the primary {primary}:{port} within'
            + f' {REPLICA_SYNC_TIMEOUT_S}s"\n'
            + "    sleep 0.5\n"
            + "  done\n"
            + "fi\n"
        )
    return (
        script
        + "answer=$(rcli CONFIG REWRITE 2>&1)\n"
        + '[ "$answer" = OK ] || fail "CONFIG REWRITE: $answer"\n'
        + "rcli --raw ROLE | head -1\n"
    )


def sentinel_unit_name(port: int) -> str:
    return f"shield-sentinel-{port}.service"


def sentinel_config_path(port: int) -> str:
    return f"{SENTINEL_DIR}/sentinel-{port}.conf"


def sentinel_unit(port: int) -> str:
    """A systemd unit that runs redis-server in sentinel mode as the redis user, marked ours."""
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        f"Description=Redis Sentinel for shield-orchestrator (port {port})\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        "User=redis\n"
        "Group=redis\n"
        f"ExecStart=/usr/bin/redis-server {sentinel_config_path(port)} --sentinel\n"
        "Restart=always\n"
        "RestartSec=1\n"
        "NoNewPrivileges=yes\n"
        "ProtectSystem=strict\n"
        f"ReadWritePaths={SENTINEL_DIR}\n"
        "PrivateTmp=yes\n"
        "\n[Install]\nWantedBy=multi-user.target\n"
    )


def sentinel_apply(host: str, port: int, master: str, primary: tuple[str, int], quorum: int) -> str:
    """Write the sentinel's config (password from stdin) unless it already monitors the
    master, install its unit, start it, and wait until it answers."""
    unit = sentinel_unit_name(port)
    conf = sentinel_config_path(port)
    primary_host, primary_port = primary
    settings = (
        f"bind {host}\\nport {port}\\ndaemonize no\\nprotected-mode no\\ndir {SENTINEL_DIR}\\n"
        # Sentinels find each other by the address they announce, not their source address.
        f"sentinel announce-ip {host}\\nsentinel announce-port {port}\\n"
        f"sentinel monitor {master} {primary_host} {primary_port} {quorum}\\n"
        f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}\\n"
        f"sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}\\n"
        f"sentinel parallel-syncs {master} 1\\n"
    )
    return (
        HEADER
        + _fail_function(host)
        + "IFS= read -r password || true\n"
        + '[ -n "$password" ] || fail "sentinel mode needs redisPassword"\n'
        + '[ -x /usr/bin/redis-server ] || fail "redis-server is missing (install redis-server)"\n'
        + _refuse_foreign_unit(unit)
        + f"{dir_is_ours(SENTINEL_DIR, SENTINEL_FILES)} || fail {q(foreign(SENTINEL_DIR, None))}\n"
        + f"install -d -m 0750 -o redis -g redis {q(SENTINEL_DIR)}\n"
        + f"[ -e {q(SENTINEL_DIR + '/' + MARKER_FILE)} ]"
        + f" || echo {q(MARKER)} > {q(SENTINEL_DIR + '/' + MARKER_FILE)}\n"
        + f"if ! grep -q {q('^sentinel monitor ' + master + ' ')} {q(conf)} 2>/dev/null; then\n"
        + "  umask 077\n"
        + f"  tmp=$(mktemp {q(conf + '.XXXXXX')})\n"
        + f'  printf {q(settings)} > "$tmp"\n'
        + f"  printf 'sentinel auth-pass {master} %s\\nrequirepass %s\\n'"
        + ' "$password" "$password" >> "$tmp"\n'
        + '  chown redis:redis "$tmp"\n'
        + f'  mv -f "$tmp" {q(conf)}\n'
        + "  fresh=yes\n"
        + "fi\n"
        + f"cat > {q('/etc/systemd/system/' + unit + '.tmp')} <<'UNIT'\n{sentinel_unit(port)}UNIT\n"
        + f"mv -f {q('/etc/systemd/system/' + unit + '.tmp')} {q('/etc/systemd/system/' + unit)}\n"
        + "systemctl daemon-reload\n"
        + f"systemctl enable --quiet {q(unit)}\n"
        + f'if [ "${{fresh:-}}" = yes ]; then systemctl restart {q(unit)};'
        + f" else systemctl start {q(unit)}; fi\n"
        + 'export REDISCLI_AUTH="$password"\n'
        + "deadline=$((SECONDS + 30))\n"
        + f'until [ "$(redis-cli --no-auth-warning -h {q(host)} -p {port} PING 2>/dev/null)"'
        + " = PONG ]; do\n"
        + f'  [ "$SECONDS" -lt "$deadline" ] || fail "sentinel on port {port} does not answer"\n'
        + "  sleep 0.5\n"
        + "done\n"
        + f"echo {q(f'sentinel {host}:{port} monitors {master}')}\n"
    )


def sentinel_remove(port: int) -> str:
    """Stop and remove one sentinel, its unit and its state, if the unit is ours."""
    unit = sentinel_unit_name(port)
    path = f"{UNIT_DIR}/{unit}"
    return (
        HEADER
        + f"if [ -e {q(path)} ] && {_is_ours(path)}; then\n"
        + f"  systemctl disable --now --quiet {q(unit)} 2>/dev/null || true\n"
        + f"  rm -f {q(path)} {q(sentinel_config_path(port))}\n"
        + "  systemctl daemon-reload\n"
        + "fi\n"
        + 'echo "removed"\n'
    )


def _is_ours(path: str) -> str:
    """A shell test: the unit carries the marker, or is one of ours from before it."""
    return (
        f'{{ [ "$(head -n 1 {q(path)} 2>/dev/null)" = {q(MARKER)} ]'
        f" || grep -q 'Redis Sentinel for shield-orchestrator' {q(path)}; }}"
    )


def _foreign_unit(path: str) -> str:
    return (
        f"{path} exists and was not made by this deployment;"
        " remove it or list another port in redisSentinels"
    )


def sentinel_checks(ports: list[int]) -> str:
    """The identity read's check of a sentinel host: a conflict line for each sentinel unit
    of ours (by port) that someone else holds, and for our directory if it is not ours."""
    lines = ""
    for port in ports:
        path = f"{UNIT_DIR}/{sentinel_unit_name(port)}"
        lines += (
            f"[ ! -e {q(path)} ] || {_is_ours(path)} || conflict redisSentinels"
            f" {q(_foreign_unit(path))}\n"
        )
    return (
        lines
        + f"{dir_is_ours(SENTINEL_DIR, SENTINEL_FILES)}"
        + f" || conflict - {q(foreign(SENTINEL_DIR, None))}\n"
    )


def _refuse_foreign_unit(unit: str) -> str:
    """Stop before anything changes when a unit at our sentinel's name is not ours."""
    path = f"{UNIT_DIR}/{unit}"
    problem = _foreign_unit(path)
    return f"if [ -e {q(path)} ] && ! {_is_ours(path)}; then\n  fail {q(problem)}\nfi\n"
