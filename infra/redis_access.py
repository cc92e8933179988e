"""Pure builders of what the stack does to a Redis's users and memory (redisApiPassword,
redisWorkerPassword, redisDisableDefaultUser, redisMaxmemory).

The Redis on the hosts is the user's: we never edit its config file (no CONFIG REWRITE, no
aclfile line). What we set lives in a directory and a systemd unit of ours on the Redis
host: the unit runs `apply --watch`, which sets them once Redis answers and again whenever
Redis comes back with another run id (a restart, a crash), so the users, the default user's
state and maxmemory come back within about 2 s without a config we did not write. `apply`
reads the deploy's password and the service users' password hashes from 0600 root files
there; no password is on a command line (`redis-cli -x` takes the hash rule from stdin) or
in this text.

The deploy itself becomes an ACL user (DEPLOY_USER, with redisPassword), so its checks, the
group setup and the stack's outputs go on working once the default user is off.
"""

from __future__ import annotations

from infra.config import RedisAccess
from infra.host_scripts import (
    DEPLOY_USER,
    HEADER,
    MARKER,
    MARKER_FILE,
    UNIT_DIR,
    _fail_function,
    dir_is_ours,
    foreign,
    q,
)
from service.core import redis_acl

ACCESS_DIR = "/etc/shield-redis-access"
ACCESS_UNIT = "shield-redis-access.service"
# How long `apply` waits for the Redis it follows to answer (it may be loading its data).
READY_TIMEOUT_S = 60
# The deploy's commands: its checks (PING, INFO replication, the host token), the groups
# (XGROUP CREATE, XINFO), dropping the streams on destroy, and what it sets here. ACL SETUSER
# is as strong as @admin anyway; the list keeps a slip in a script from FLUSHALL or DEBUG.
DEPLOY_COMMANDS = (
    "auth",
    "hello",
    "select",
    "ping",
    "info",
    "get",
    "set",
    "del",
    "xgroup|create",
    "xinfo|groups",
    "xinfo|stream",
    "acl|setuser",
    "acl|deluser",
    "acl|getuser",
    "config|get",
    "config|set",
)


def deploy_rules() -> list[str]:
    """The deploy user's rules: its commands on every key (it creates the stream groups and
    its host token wherever the stack names them)."""
    return redis_acl.user_rules(DEPLOY_COMMANDS, ["*"])


def _users(access: RedisAccess) -> list[tuple[str, list[str]]]:
    if not access.acl_users:
        return []
    return [
        (DEPLOY_USER, deploy_rules()),
        (redis_acl.API_USER, redis_acl.api_rules(access.streams)),
        (redis_acl.WORKER_USER, redis_acl.worker_rules(access.streams)),
    ]


def _cli_functions(host: str, port: int, directory: str) -> str:
    """rcli as the deploy user when it exists, else as the default user (pick_user), with
    the password from our file."""
    return (
        f"REDISCLI_AUTH=$(cat {q(directory + '/deploy-password')})\n"
        + "export REDISCLI_AUTH\n"
        + f'cli() {{ redis-cli --no-auth-warning -h {q(host)} -p {port} "$@"; }}\n'
        + "as=()\n"
        + "pick_user() {\n"
        + "  as=()\n"
        + f'  if [ "$(cli --user {DEPLOY_USER} PING 2>/dev/null)" = PONG ]; then'
        + f" as=(--user {DEPLOY_USER}); fi\n"
        + "}\n"
        + 'rcli() { cli "${as[@]}" "$@"; }\n'
        + "pick_user\n"
    )


def apply_script(host: str, port: int, access: RedisAccess, directory: str = ACCESS_DIR) -> str:
    """The script our unit runs: wait until Redis answers, set our users (replaced whole),
    the default user's state and maxmemory; with --watch, do it again whenever Redis comes
    back with another run id (a restart, a crash), until stopped."""
    apply_lines = []
    for user, rules in _users(access):
        apply_lines.append(f"  setuser {q(user)} {' '.join(q(rule) for rule in rules)}\n")
        if user == DEPLOY_USER:
            apply_lines.append(f"  as=(--user {DEPLOY_USER})\n")
    if access.disable_default_user:
        apply_lines.append(_expect_ok("ACL SETUSER default off", "rcli ACL SETUSER default off"))
    if access.maxmemory is not None:
        apply_lines.append(
            _expect_ok("CONFIG SET maxmemory", f"rcli CONFIG SET maxmemory {q(access.maxmemory)}")
        )
        apply_lines.append(
            _expect_ok("CONFIG SET maxmemory-policy", "rcli CONFIG SET maxmemory-policy noeviction")
        )
    return (
        HEADER
        + _fail_function(host)
        + _cli_functions(host, port, directory)
        + "wait_ready() {\n"
        + "  local answer deadline\n"
        + f"  deadline=$((SECONDS + {READY_TIMEOUT_S}))\n"
        + "  pick_user\n"
        + '  until answer=$(rcli PING 2>&1) && [ "$answer" = PONG ]; do\n'
        + '    [ "$SECONDS" -lt "$deadline" ]'
        + f' || fail "Redis at {host}:{port} does not answer PING: $answer"\n'
        + "    sleep 0.5\n"
        + "    pick_user\n"
        + "  done\n"
        + "}\n"
        + "setuser() {\n"
        + '  local user="$1" answer\n'
        + "  shift\n"
        # The hash rule comes last, from stdin (-x): after `reset`, so it is the only one.
        + f'  answer=$(printf \'#%s\' "$(cat {q(directory)}/"$user.sha256")"'
        + ' | rcli -x ACL SETUSER "$user" reset "$@" 2>&1)\n'
        + '  [ "$answer" = OK ] || fail "ACL SETUSER $user: $answer"\n'
        + "}\n"
        + "apply() {\n"
        + "  local answer\n"
        + "".join(apply_lines)
        + "  :\n"
        + "}\n"
        + "run_id() { pick_user; rcli --raw INFO server | tr -d '\\r' | sed -n 's/^run_id://p'; }\n"
        + "wait_ready\n"
        + "apply\n"
        + "echo applied\n"
        + 'if [ "${1:-}" = --watch ]; then\n'
        + "  last=$(run_id || true)\n"
        + "  while sleep 2; do\n"
        + "    now=$(run_id 2>/dev/null || true)\n"
        + '    if [ -z "$now" ] || [ "$now" = "$last" ]; then continue; fi\n'
        + "    wait_ready\n"
        + "    apply\n"
        + '    last="$now"\n'
        + '    echo "applied again: Redis restarted (run id $now)"\n'
        + "  done\n"
        + "fi\n"
    )


def _expect_ok(what: str, command: str) -> str:
    return f'  answer=$({command} 2>&1)\n  [ "$answer" = OK ] || fail "{what}: $answer"\n'


def access_unit(access: RedisAccess, directory: str = ACCESS_DIR) -> str:
    """Our unit: after the Redis unit, apply, then watch for a Redis that restarted (a
    restart of its unit, a crash, an OOM kill) and apply again; marked ours like every unit
    the deployment writes."""
    unit = access.redis_unit
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        f"Description=shield-orchestrator's Redis users and maxmemory on {unit}\n"
        f"After={unit}\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart=/bin/bash {directory}/apply --watch\n"
        "Restart=always\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def _is_ours(path: str) -> str:
    return f'[ "$(head -n 1 {q(path)} 2>/dev/null)" = {q(MARKER)} ]'


def _keep_passwords(users: list[str], directory: str) -> str:
    """Read one password a line from stdin: the deploy's (kept as is, to authenticate), then
    each service user's (kept only as its SHA-256, the form ACL SETUSER takes)."""
    if not users:
        return "IFS= read -r password || true\n" + _keep_deploy_password(directory)
    text = ""
    for user in users:
        text += (
            "IFS= read -r password || true\n"
            + f'[ -n "$password" ] || fail {q("no password for " + user)}\n'
            + "printf '%s' \"$password\" | sha256sum | cut -d' ' -f1"
            + f" > {q(f'{directory}/{user}.sha256')}\n"
        )
        if user == DEPLOY_USER:
            text += _keep_deploy_password(directory)
    return text


def _keep_deploy_password(directory: str) -> str:
    return f"printf '%s' \"$password\" > {q(directory + '/deploy-password')}\n"


def access_checks() -> str:
    """The identity read's check of the Redis host (when the stack sets access): a conflict
    line for our unit's or our directory's name held by something we did not make. No stack
    key moves them, so the line says to remove it."""
    unit_path = f"{UNIT_DIR}/{ACCESS_UNIT}"
    return (
        f"[ ! -e {q(unit_path)} ] || {_is_ours(unit_path)}"
        f" || conflict - {q(foreign(unit_path, None))}\n"
        f"{dir_is_ours(ACCESS_DIR)} || conflict - {q(foreign(ACCESS_DIR, None))}\n"
    )


def access_apply(host: str, port: int, access: RedisAccess) -> str:
    """The deploy's step on the Redis host: keep the passwords read from stdin (the deploy's,
    then each service user's) as 0600 root files, write apply and our unit, run apply once,
    then start the unit that keeps it applied."""
    unit_path = f"{UNIT_DIR}/{ACCESS_UNIT}"
    directory = ACCESS_DIR
    foreign_unit = foreign(unit_path, None)
    no_unit = (
        f"there is no unit {access.redis_unit} here: set redisSystemdUnit to the unit that"
        " runs Redis"
    )
    users = [user for user, _ in _users(access)]
    return (
        HEADER
        + _fail_function(host)
        + f"systemctl cat {q(access.redis_unit)} >/dev/null 2>&1 || fail {q(no_unit)}\n"
        + f"if [ -e {q(unit_path)} ] && ! {_is_ours(unit_path)}; then fail {q(foreign_unit)}; fi\n"
        # Never write into (and so later remove) a directory someone else made at our name.
        + f"{dir_is_ours(directory)} || fail {q(foreign(directory, None))}\n"
        + "umask 077\n"
        + f"install -d -m 0700 -o root -g root {q(directory)}\n"
        + f"[ -e {q(directory + '/' + MARKER_FILE)} ]"
        + f" || echo {q(MARKER)} > {q(directory + '/' + MARKER_FILE)}\n"
        + _keep_passwords(users, directory)
        + "unset password\n"
        + f"cat > {q(directory + '/apply.tmp')} <<'APPLY'\n"
        + apply_script(host, port, access)
        + "APPLY\n"
        + f"mv -f {q(directory + '/apply.tmp')} {q(directory + '/apply')}\n"
        + f"cat > {q(unit_path + '.tmp')} <<'UNIT'\n{access_unit(access)}UNIT\n"
        + f"chmod 0644 {q(unit_path + '.tmp')}\n"
        + f"mv -f {q(unit_path + '.tmp')} {q(unit_path)}\n"
        # Once here, so a failure stops this step with its reason; then the watcher.
        + f"bash {q(directory + '/apply')} >&2\n"
        + "systemctl daemon-reload\n"
        + f"systemctl enable --quiet {q(ACCESS_UNIT)}\n"
        + f"systemctl restart {q(ACCESS_UNIT)}\n"
        + f"echo {q(' '.join(['applied', *users]))}\n"
    )


def access_remove(host: str, port: int, access: RedisAccess) -> str:
    """Undo what apply set, if the unit is ours: our users gone, the default user on again
    if we turned it off; then our unit and directory. maxmemory stays as it is (a Redis
    emptied of its limit could take the host's memory): the README says so."""
    unit_path = f"{UNIT_DIR}/{ACCESS_UNIT}"
    directory = ACCESS_DIR
    users = [user for user, _ in _users(access)]
    service_users = [user for user in users if user != DEPLOY_USER]
    undo = ""
    if access.disable_default_user:
        undo += "rcli ACL SETUSER default on >/dev/null 2>&1 || true\n"
    if service_users:
        listed = " ".join(q(user) for user in service_users)
        undo += f"rcli ACL DELUSER {listed} >/dev/null 2>&1 || true\n"
    if DEPLOY_USER in users:
        undo += f"rcli ACL DELUSER {DEPLOY_USER} >/dev/null 2>&1 || true\n"
    return (
        HEADER
        + f"if [ -e {q(unit_path)} ] && {_is_ours(unit_path)}; then\n"
        + f"  systemctl disable --now --quiet {q(ACCESS_UNIT)} 2>/dev/null || true\n"
        + f"  if [ -s {q(directory + '/deploy-password')} ]; then\n"
        + "    "
        + (_cli_functions(host, port, directory) + undo).replace("\n", "\n    ").rstrip(" ")
        + "  fi\n"
        + f"  rm -f {q(unit_path)}\n"
        + "  systemctl daemon-reload\n"
        + "fi\n"
        + f"if [ -e {q(directory + '/' + MARKER_FILE)} ]; then rm -rf {q(directory)}; fi\n"
        + 'echo "removed"\n'
    )
