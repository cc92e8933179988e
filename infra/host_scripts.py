"""Pure builders of the shell scripts that run on the hosts.

Every script starts with ``set -euo pipefail``, quotes each value with shlex.quote, and says
which host and which piece is at fault when it stops. Secrets never appear here: the scripts
read them from standard input, which pulumi-command keeps encrypted in the state.

Never touch what we did not make: every unit and env file the deployment writes starts with
MARKER, and every directory it makes holds MARKER_FILE. A step replaces or removes only what
carries the marker (or, for deployments from before the markers, what only we ever wrote:
a `.host-token` in the install directory, a unit that reads our env file with our
Environment= line). The identity read (`host_checks`) reports anything else at our names
before any step runs, so preview and up stop without changing anything.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence

from infra.config import SECRET_FIELDS, RedisSettings, ServiceSettings, env_name
from service.core import names
from service.core.settings import Settings

HEADER = "set -euo pipefail\n"
# The deploy's own Redis user, when the stack gives the service ACL users (infra.redis_access).
DEPLOY_USER = "shield-deploy"
MARKER = "# Managed by shield-orchestrator (Pulumi): replaced and removed by its deployment."
MARKER_FILE = ".managed-by-shield-orchestrator"
UNIT_DIR = "/etc/systemd/system"


def q(value: object) -> str:
    """Shell-quote one value."""
    return shlex.quote(str(value))


def invocation(script: str, use_sudo: bool) -> str:
    """The command line that runs a script: bash -c, through sudo -n for a non-root user."""
    runner = "sudo -n bash -c " if use_sudo else "bash -c "
    return runner + q(script)


def on_host(identity: str, script: str) -> str:
    """The script marked with the host's identity, so a rebuilt host runs it again."""
    return f"# host {identity}\n" + script


def orchestrator_identity(install_dir: str, create: bool) -> str:
    """Print the machine id and the install token; with create (an up, never a preview),
    make the token (and the marked install directory) when there is none."""
    token = f"{install_dir}/.host-token"
    make = ""
    if create:
        make = (
            f'if [ ! -s {q(token)} ] && [ "${{conflicts:-0}}" = 0 ]; then\n'
            + f"  install -d -m 0755 {q(install_dir)}\n"
            + f"  {_mark_dir(install_dir)}\n"
            + f"  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {q(token + '.tmp')}\n"
            + f"  mv -f {q(token + '.tmp')} {q(token)}\n"
            + "fi\n"
        )
    return (
        HEADER
        + 'echo "machine-id $(cat /etc/machine-id)"\n'
        + make
        + f'if [ -s {q(token)} ]; then echo "token $(cat {q(token)})"\n'
        + "else echo 'token none'; fi\n"
    )


def _refuse_foreign(check: str, path: str, key: str) -> str:
    """Stop unless path is ours (or absent), naming the stack key that moves us elsewhere."""
    return (
        f"{check} {q(path)} || fail"
        f" {q(f'{path} exists and was not made by this deployment; set {key} to a free name')}\n"
    )


def _mark_dir(path: str) -> str:
    return (
        f"[ -e {q(path + '/' + MARKER_FILE)} ] || echo {q(MARKER)} > {q(path + '/' + MARKER_FILE)}"
    )


def ownership_functions(service: ServiceSettings) -> str:
    """Shell functions that say whether a path is ours: marked, or from before the markers
    (a unit that reads our env file with our Environment= line; an env file of nothing but
    SHIELD_ settings; a directory with our token, or nothing but such an env file).

    ours_dir says what a step may write into: an empty directory too, since it holds nothing
    to lose. marked_dir says what destroy may remove: only a directory carrying our marker
    (or our token), never one we merely found empty.
    """
    env_line = f"EnvironmentFile={service.config_dir}/shield.env"
    return (
        f"marker={q(MARKER)}\n"
        + "ours_file() {\n"
        + '  [ ! -e "$1" ] && return 0\n'
        + '  [ "$(head -n 1 "$1" 2>/dev/null)" = "$marker" ] && return 0\n'
        + f'  grep -qxF {q(env_line)} "$1" 2>/dev/null'
        + " && grep -qxF 'Environment=PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1' \"$1\"\n"
        + "}\n"
        + "ours_env() {\n"
        + '  [ ! -e "$1" ] && return 0\n'
        + '  [ "$(head -n 1 "$1" 2>/dev/null)" = "$marker" ] && return 0\n'
        + "  ! grep -qvE '^(SHIELD_[A-Z0-9_]+=.*)?$' \"$1\"\n"
        + "}\n"
        + "marked_dir() {\n"
        + f'  [ -d "$1" ] && {{ [ -f "$1/{MARKER_FILE}" ] || [ -f "$1/.host-token" ]; }}\n'
        + "}\n"
        + "ours_dir() {\n"
        + "  local entry\n"
        + '  [ ! -e "$1" ] && return 0\n'
        + '  [ -d "$1" ] || return 1\n'
        + '  marked_dir "$1" && return 0\n'
        + '  for entry in "$1"/* "$1"/.[!.]*; do\n'
        + '    [ -e "$entry" ] || continue\n'
        + '    [ "${entry##*/}" = shield.env ] && ours_env "$entry" && continue\n'
        + "    return 1\n"
        + "  done\n"
        + "}\n"
    )


def check_prelude(service: ServiceSettings) -> str:
    """What the identity read's checks share: `conflict <stack key> <message>` prints one
    line and counts it in `conflicts`, and the ownership functions."""
    return (
        "conflicts=0\n"
        + 'conflict() { conflicts=$((conflicts + 1)); printf \'conflict %s %s\\n\' "$1" "$2"; }\n'
        + ownership_functions(service)
    )


def foreign(path: str, key: str | None) -> str:
    """The one line for something at our name that we did not make: the stack key that moves
    us elsewhere, or, where none can, what the user must do."""
    remedy = f"set {key} to a free name" if key else "remove or rename it"
    return f"{path} exists and was not made by this deployment; {remedy}"


def path_checks(named: Sequence[tuple[str, str, str]]) -> str:
    """A conflict line for each (stack key, ownership check, path) whose path is not ours."""
    return "".join(
        f"{check} {q(path)} || conflict {key or '-'} {q(foreign(path, key))}\n"
        for key, check, path in named
    )


def dir_is_ours(path: str, also_ours: Sequence[str] = ()) -> str:
    """A shell test, for a directory of ours with no stack key (the Redis host's): true when
    the path is absent, or a directory that carries our marker or holds nothing but entries
    named like also_ours (globs: what we wrote there before the markers). An empty one holds
    nothing to lose, so it may be used; destroy removes only a marked one."""
    allowed = "".join(f" ! -name {q(pattern)}" for pattern in also_ours)
    return (
        f"{{ [ ! -e {q(path)} ] || {{ [ -d {q(path)} ] && {{ [ -f {q(path + '/' + MARKER_FILE)} ]"
        f' || [ -z "$(find {q(path)} -mindepth 1 -maxdepth 1{allowed} -print -quit)" ]; }}; }}; }}'
    )


def install_dir_check(service: ServiceSettings) -> str:
    """For a host that runs no service of ours but keeps its token in installDir (a Redis
    replica, a sentinel): the same check of installDir before the token is written there."""
    return path_checks([("installDir", "ours_dir", service.install_dir)])


def host_checks(
    host: str,
    service: ServiceSettings,
    bind: str,
    ports: Sequence[int],
    edge: tuple[str, int] | None = None,
) -> str:
    """The prelude, then service_checks: a host of the service's whole check."""
    return check_prelude(service) + service_checks(host, service, bind, ports, edge)


def service_checks(
    host: str,
    service: ServiceSettings,
    bind: str,
    ports: Sequence[int],
    edge: tuple[str, int] | None = None,
) -> str:
    """Report (as `conflict <stack key> <message>` lines) each unit or directory at our names
    that we did not make, and each API port (and the front's, edge = (address, port)) that a
    process other than ours listens on.

    Part of the identity read, before any step: it writes nothing. `conflicts` (check_prelude)
    counts them, so the identity script that follows makes no token on a host we may not use.
    """
    api, worker = unit_names(service)
    named = [
        ("serviceName", "ours_file", f"{UNIT_DIR}/{api}"),
        ("serviceName", "ours_file", f"{UNIT_DIR}/{worker}"),
        ("serviceName", "ours_file", f"{UNIT_DIR}/{collector_unit_name(service)}"),
        ("installDir", "ours_dir", service.install_dir),
        ("configDir", "ours_dir", service.config_dir),
    ]
    if edge is not None:
        named.insert(
            3, ("serviceName", "ours_file", f"{UNIT_DIR}/{service.unit_name}-edge.service")
        )
    checks = path_checks(named)
    port_check = ""
    if ports:
        # The lab's hosts share one network namespace: only listeners on our address (or on
        # every address) are in the way.
        ours_api = f"/{_pattern(service.unit_name)}@$port\\.service"
        port_check = (
            "listener() {\n"
            + '  local port="$1" bind="$2" ours="$3" line address pid name unit\n'
            + "  while IFS= read -r line; do\n"
            + "    address=$(awk '{print $4}' <<<\"$line\")\n"
            + '    address="${address%:*}"\n'
            + '    case "$address" in\n'
            + '      "$bind" | 0.0.0.0 | "*" | "[::]" | "[::ffff:$bind]") ;;\n'
            + '      *) [ "$bind" = 0.0.0.0 ] || [ "$bind" = :: ] || [ "$bind" = "*" ]'
            + " || continue ;;\n"
            + "    esac\n"
            + "    pid=$(sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' <<<\"$line\")\n"
            + '    if [ -n "$pid" ] && grep -q "$ours" "/proc/$pid/cgroup" 2>/dev/null; then\n'
            + "      continue\n"
            + "    fi\n"
            + '    name=$(sed -n \'s/.*(("\\([^"]*\\)".*/\\1/p\' <<<"$line")\n'
            + "    unit=$(sed -n 's|.*/\\([^/]*\\.service\\)$|\\1|p'"
            + ' "/proc/${pid:-0}/cgroup" 2>/dev/null | head -n 1) || unit=""\n'
            + "    printf '%s (pid %s%s)\\n'"
            + ' "${name:-a process}" "${pid:-unknown}" "${unit:+, $unit}"\n'
            + "    return 0\n"
            + '  done < <(ss -Hltnp "sport = :$port" 2>/dev/null || true)\n'
            + "}\n"
            # Without ss the ports cannot be checked: say so, never skip it silently.
            + "if ! command -v ss >/dev/null 2>&1; then\n"
            + "  conflict servicePort"
            + f" {q(f'cannot check the ports on {host}: ss is missing (install iproute2)')}\n"
            + "else\n"
            + f"  for port in {' '.join(str(port) for port in ports)}; do\n"
            + f'    holder=$(listener "$port" {q(bind)} "{ours_api}")\n'
            + '    [ -z "$holder" ] || conflict servicePort'
            + f' "port $port on {host} is held by $holder; stop it or set servicePort"\n'
            + "  done\n"
            + (
                f"  holder=$(listener {edge[1]} {q(edge[0])}"
                f" {q('/' + _pattern(service.unit_name) + '-edge' + chr(92) + '.service')})\n"
                + '  [ -z "$holder" ] || conflict edgePort'
                + f' "port {edge[1]} on {host} is held by $holder; stop it or set edgePort"\n'
                if edge is not None
                else ""
            )
            + "fi\n"
        )
    return checks + port_check


def _pattern(text: str) -> str:
    """A unit name as a grep pattern: its dots escaped (unit names hold no other special)."""
    return text.replace(".", "\\.")


def _fail_function(host: str) -> str:
    return (
        f"fail() {{ printf 'shield-orchestrator: host %s: %s\\n' {q(host)} \"$*\" >&2; exit 1; }}\n"
    )


def orchestrator_preflight(
    host: str, service: ServiceSettings, install_os_packages: bool, python_version: str | None
) -> str:
    """Check systemd and Python on the orchestrator, then create the service user and dirs."""
    install = "yes" if install_os_packages else "no"
    version_check = ""
    if python_version is not None:
        version_check = (
            "have=$(python3 -c 'import sys;"
            f' print(".".join(map(str, sys.version_info[:{python_version.count(".") + 1}])))\')\n'
            f'[ "$have" = {q(python_version)} ]'
            f' || fail "python3 is $have but the wheelhouse is built'
            f' for {python_version}: set targetPythonVersion"\n'
        )
    return (
        HEADER
        + _fail_function(host)
        + f"install_os_packages={install}\n"
        + '[ -d /run/systemd/system ] || fail "systemd is not running as PID 1"\n'
        + "missing=()\n"
        + "command -v python3 >/dev/null 2>&1 || missing+=(python3)\n"
        + "python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)\n"
        + 'if [ "${#missing[@]}" -gt 0 ]; then\n'
        + '  if [ "$install_os_packages" = yes ]; then\n'
        + "    export DEBIAN_FRONTEND=noninteractive\n"
        + '    { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >&2'
        + ' || fail "missing ${missing[*]} and apt-get could not install it"\n'
        + "  else\n"
        + '    fail "missing ${missing[*]} (install it, or set installOsPackages to true)"\n'
        + "  fi\n"
        + "fi\n"
        + version_check
        + f"getent group {q(service.user)} >/dev/null || groupadd --system {q(service.user)}\n"
        + f"id -u {q(service.user)} >/dev/null 2>&1 || useradd --system --gid {q(service.user)}"
        + f" --home-dir {q(service.install_dir)} --no-create-home --shell /usr/sbin/nologin"
        + f" {q(service.user)}\n"
        + ownership_functions(service)
        + _refuse_foreign("ours_dir", service.install_dir, "installDir")
        + _refuse_foreign("ours_dir", service.config_dir, "configDir")
        + "install -d -m 0755 -o root -g root"
        + f" {q(service.install_dir)} {q(service.install_dir + '/releases')}"
        + f" {q(service.install_dir + '/incoming')}\n"
        + f"install -d -m 0750 -o root -g {q(service.user)} {q(service.config_dir)}\n"
        + _mark_dir(service.install_dir)
        + "\n"
        + _mark_dir(service.config_dir)
        + "\n"
        + 'echo "ready"\n'
    )


def release_unpack(install_dir: str, digest: str, tarball: str) -> str:
    """Unpack a release tarball into releases/<digest> and point current at it."""
    release = f"{install_dir}/releases/{digest}"
    return (
        HEADER
        + f"# release {digest}\n"
        + f"if [ ! -f {q(release + '/.complete')} ]; then\n"
        + f"  [ -f {q(tarball)} ] || {{ echo {q('missing ' + tarball)} >&2; exit 1; }}\n"
        + f"  rm -rf {q(release + '.partial')}\n"
        + f"  install -d -m 0755 {q(release + '.partial')}\n"
        + f"  tar -xzf {q(tarball)} -C {q(release + '.partial')} --no-same-owner\n"
        + f"  touch {q(release + '.partial/.complete')}\n"
        + f"  rm -rf {q(release)}\n"
        + f"  mv {q(release + '.partial')} {q(release)}\n"
        + "fi\n"
        + f"ln -sfn {q(release)} {q(install_dir + '/current.next')}\n"
        + f"mv -T {q(install_dir + '/current.next')} {q(install_dir + '/current')}\n"
        + f"echo {q(digest)}\n"
    )


def venv_install(
    install_dir: str,
    requirements: str,
    requirements_digest: str,
    wheelhouse_tarball: str | None,
    index_url: str | None,
) -> str:
    """Build venv-<digest> from the locked requirements, each file checked against its hash
    (--require-hashes), then point venv at it.

    The requirements travel inside the script, so a change to them changes the command and
    Pulumi re-runs it; a venv that is already complete is reused.
    """
    venv = f"{install_dir}/venv-{requirements_digest}"
    requirements_file = f"{venv}.requirements.txt"
    if wheelhouse_tarball is not None:
        source = (
            "wheels=$(mktemp -d)\ntrap 'rm -rf \"$wheels\"' EXIT\n"
            + f'tar -xf {q(wheelhouse_tarball)} -C "$wheels"\n'
            + 'pip_source=(--no-index --find-links "$wheels")\n'
        )
    elif index_url is not None:
        source = f"pip_source=(--index-url {q(index_url)})\n"
    else:
        source = "pip_source=()\n"
    return (
        HEADER
        + f"# requirements {requirements_digest}\n"
        + f"if [ ! -f {q(venv + '/.complete')} ]; then\n"
        + f"  rm -rf {q(venv)}\n"
        + f"  cat > {q(requirements_file)} <<'REQUIREMENTS'\n"
        + f"{requirements.rstrip()}\nREQUIREMENTS\n"
        + "  "
        + source.replace("\n", "\n  ").rstrip(" ")
        + f"  python3 -m venv {q(venv)}\n"
        + f"  {q(venv + '/bin/pip')} install --quiet --disable-pip-version-check"
        + " --require-hashes"
        + ' "${pip_source[@]}"'
        + f" -r {q(requirements_file)} >&2\n"
        + f"  touch {q(venv + '/.complete')}\n"
        + "fi\n"
        + f"ln -sfn {q(venv)} {q(install_dir + '/venv.next')}\n"
        + f"mv -T {q(install_dir + '/venv.next')} {q(install_dir + '/venv')}\n"
        + f"echo {q(requirements_digest)}\n"
    )


def _systemd_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def env_file(settings: Mapping[str, str]) -> str:
    """An EnvironmentFile: the marker, then KEY="value" lines, sorted so the text is stable."""
    lines = [MARKER]
    for key in sorted(settings):
        value = settings[key]
        if "\n" in value or "\r" in value:
            raise ValueError(f"{key}: a setting cannot span lines")
        lines.append(f"{key}={_systemd_quote(value)}")
    return "\n".join(lines) + "\n"


def service_environment(app: Settings) -> dict[str, str]:
    """Every SHIELD_* setting that is not secret, generated from the Settings model's fields."""
    values = app.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    environment = {}
    for field, value in values.items():
        if value is None:
            continue
        if isinstance(value, list | dict):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        environment[env_name(field)] = text
    return environment


HARDENING = """NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
"""


def unit_file(
    service: ServiceSettings, description: str, exec_start: str, import_dir: str | None = None
) -> str:
    """A hardened systemd unit for one of the service's processes, marked as ours;
    import_dir (in the release) goes on its Python path."""
    python_path = ""
    if import_dir is not None:
        python_path = f"Environment=PYTHONPATH={service.install_dir}/current/{import_dir}\n"
    return (
        f"{MARKER}\n"
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"User={service.user}\n"
        f"Group={service.user}\n"
        f"EnvironmentFile={service.config_dir}/shield.env\n"
        "Environment=PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\n"
        f"{python_path}"
        f"WorkingDirectory={service.install_dir}/current\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "TimeoutStopSec=30\n"
        f"LimitNOFILE={service.open_files}\n"
        + HARDENING
        + "\n[Install]\nWantedBy=multi-user.target\n"
    )


def api_unit(service: ServiceSettings, bind_address: str | None = None) -> str:
    """The API's template unit: instance %i is the port, one process per port."""
    exec_start = (
        f"{service.install_dir}/venv/bin/uvicorn service.main:app"
        f" --host {bind_address or service.bind_address} --port %i --timeout-graceful-shutdown 10"
        f" --limit-concurrency {service.api_concurrency}"
    )
    return unit_file(
        service,
        "Shield orchestrator API on port %i (Redis Streams queue and event bus)",
        exec_start,
    )


def worker_unit(service: ServiceSettings, import_dir: str | None = None) -> str:
    """The worker's template unit: instance %i is the worker's number on this host; it
    imports handlers from import_dir (handlerPath's directory in the release) too."""
    exec_start = f"{service.install_dir}/venv/bin/python -m service.worker"
    return unit_file(service, "Shield orchestrator task worker %i", exec_start, import_dir)


def collector_unit(service: ServiceSettings) -> str:
    """The metrics-collector's unit: one process per host that runs workers, reading both
    streams in the metrics-collector group (service.collector)."""
    exec_start = f"{service.install_dir}/venv/bin/python -m service.collector"
    return unit_file(service, "Shield orchestrator metrics-collector", exec_start)


def collector_unit_name(service: ServiceSettings) -> str:
    return f"{service.unit_name}-collector.service"


def unit_names(service: ServiceSettings) -> tuple[str, str]:
    """The two template units."""
    return f"{service.unit_name}@.service", f"{service.unit_name}-worker@.service"


def api_instance(service: ServiceSettings, port: int) -> str:
    return f"{service.unit_name}@{port}.service"


def worker_instance(service: ServiceSettings, number: int) -> str:
    return f"{service.unit_name}-worker@{number}.service"


def _legacy_units(service: ServiceSettings) -> tuple[str, str]:
    """The plain units of deployments before the template units."""
    return f"{service.unit_name}.service", f"{service.unit_name}-worker.service"


def service_apply(
    host: str,
    service: ServiceSettings,
    revision: Sequence[str],
    bind_address: str | None = None,
    import_dir: str | None = None,
    collector: bool = False,
) -> str:
    """Write the env file from stdin and both template units (and, on a host of workers
    (collector), the metrics-collector's unit), then reload systemd.

    Each process is an instance of a template, started by a step of its own (instance_start),
    so adding or removing a process touches only that process. The revision lines (digests of
    code, venv and units) only mark what is deployed: when one changes, the script changes,
    Pulumi runs it again, and every instance step, which carries this step's output, restarts
    its process. Plain units from before the templates, and the collector's unit on a host
    that no longer runs workers, are stopped and removed if ours; a unit, env file or
    directory that is not ours stops the step before it changes anything.
    """
    api, worker = unit_names(service)
    collector_name = collector_unit_name(service)
    retired = [*_legacy_units(service), *([] if collector else [collector_name])]
    env_path = f"{service.config_dir}/shield.env"
    return (
        HEADER
        + "".join(f"# {line}\n" for line in revision)
        + _fail_function(host)
        + ownership_functions(service)
        + _refuse_foreign("ours_file", f"{UNIT_DIR}/{api}", "serviceName")
        + _refuse_foreign("ours_file", f"{UNIT_DIR}/{worker}", "serviceName")
        + _refuse_foreign("ours_file", f"{UNIT_DIR}/{collector_name}", "serviceName")
        + _refuse_foreign("ours_env", env_path, "configDir")
        + "umask 077\n"
        + f"tmp=$(mktemp {q(env_path + '.XXXXXX')})\n"
        + 'cat > "$tmp"\n'
        + f'chown root:{q(service.user)} "$tmp"\n'
        + 'chmod 0640 "$tmp"\n'
        + f'mv -f "$tmp" {q(env_path)}\n'
        + _write_unit(api, api_unit(service, bind_address))
        + _write_unit(worker, worker_unit(service, import_dir))
        + (_write_unit(collector_name, collector_unit(service)) if collector else "")
        + "".join(
            f"if [ -e {q(UNIT_DIR + '/' + name)} ] && ours_file {q(UNIT_DIR + '/' + name)}; then\n"
            + f"  systemctl disable --now --quiet {q(name)} 2>/dev/null || true\n"
            + f"  rm -f {q(UNIT_DIR + '/' + name)}\n"
            + "fi\n"
            for name in retired
        )
        + "systemctl daemon-reload\n"
        + 'echo "applied $(date -u +%Y-%m-%dT%H:%M:%SZ)"\n'
    )


def instance_start(unit: str, applied: str) -> str:
    """Enable and (re)start one process; `applied` is the units step's output, so a new
    env file, code or unit restarts it."""
    return (
        HEADER
        + f"# {applied.strip()}\n"
        + f"systemctl enable --quiet {q(unit)}\n"
        + f"systemctl restart {q(unit)}\n"
        + f"echo {q('started ' + unit)}\n"
    )


def instance_stop(unit: str) -> str:
    """Stop and disable one process (scaling down, or destroy)."""
    return (
        HEADER
        + f"systemctl disable --now --quiet {q(unit)} 2>/dev/null || true\n"
        + f"echo {q('stopped ' + unit)}\n"
    )


def _write_unit(name: str, text: str) -> str:
    path = f"/etc/systemd/system/{name}"
    staged = q(path + ".tmp")
    return f"cat > {staged} <<'UNIT'\n{text}UNIT\nchmod 0644 {staged}\nmv -f {staged} {q(path)}\n"


def service_remove(service: ServiceSettings) -> str:
    """Stop and remove the service, its units, code and env file, each only if ours (a
    directory only if it carries our marker); the user stays."""
    api, worker = unit_names(service)
    collector = collector_unit_name(service)
    instances = " ".join(
        q(pattern) for pattern in (f"{service.unit_name}@*", f"{service.unit_name}-worker@*")
    )
    units = " ".join(q(f"{UNIT_DIR}/{name}") for name in (api, worker))
    collector_path = f"{UNIT_DIR}/{collector}"
    return (
        HEADER
        + ownership_functions(service)
        + f"for unit in {units}; do\n"
        + '  ours_file "$unit" || continue\n'
        + f"  systemctl stop {instances} 2>/dev/null || true\n"
        + '  rm -f "$unit" "$unit.tmp"\n'
        + "  rm -f /etc/systemd/system/multi-user.target.wants/"
        + f"{q(service.unit_name)}@*.service /etc/systemd/system/multi-user.target.wants/"
        + f"{q(service.unit_name + '-worker')}@*.service\n"
        + "done\n"
        + f"if [ -e {q(collector_path)} ] && ours_file {q(collector_path)}; then\n"
        + f"  systemctl disable --now --quiet {q(collector)} 2>/dev/null || true\n"
        + f"  rm -f {q(collector_path)} {q(collector_path + '.tmp')}\n"
        + "fi\n"
        + "systemctl daemon-reload\n"
        + f"for dir in {q(service.install_dir)} {q(service.config_dir)}; do\n"
        + '  if [ -e "$dir" ] && marked_dir "$dir"; then rm -rf "$dir"; fi\n'
        + "done\n"
        + 'echo "removed"\n'
    )


def health_wait(host: str, service: ServiceSettings, urls: Sequence[str]) -> str:
    """Poll each API process's /health/detailed until it says up; on timeout, fail with the
    journal's last lines. Prints the first process's answer."""
    api, worker = unit_names(service)
    probe = (
        "import json, sys, time, urllib.request\n"
        "deadline = time.monotonic() + float(sys.argv[1])\n"
        "answers = []\n"
        "for url in sys.argv[2:]:\n"
        "    last = 'no answer'\n"
        "    while True:\n"
        "        try:\n"
        "            with urllib.request.urlopen(url, timeout=5) as reply:\n"
        "                body = json.load(reply)\n"
        "        except Exception as error:\n"
        "            last = str(error)\n"
        "        else:\n"
        "            if body.get('status') == 'up':\n"
        "                answers.append(body)\n"
        "                break\n"
        "            last = json.dumps(body)\n"
        "        if time.monotonic() > deadline:\n"
        "            print(url + ': ' + last, file=sys.stderr)\n"
        "            sys.exit(1)\n"
        "        time.sleep(1)\n"
        "print(json.dumps(answers[0], sort_keys=True))\n"
    )
    journal_units = f"-u {q(api.replace('@.', '@*.'))} -u {q(worker.replace('@.', '@*.'))}"
    listed = " ".join(q(url) for url in urls)
    return (
        HEADER
        + _fail_function(host)
        + f"if ! python3 -c {q(probe)} {service.health_timeout_s} {listed}; then\n"
        + f"  journalctl --no-pager -n 40 {journal_units} >&2 || true\n"
        + f'  fail "the API did not report up within {service.health_timeout_s}s"\n'
        + "fi\n"
    )


def health_read(url: str) -> str:
    """Print one API process's /health/detailed as one JSON line, or why it did not answer;
    only reads (for the outputs after every up). The API token, if any, comes on stdin: the
    details are for a caller with a token, others get only the status."""
    probe = (
        "import json, os, sys, urllib.error, urllib.request\n"
        "request = urllib.request.Request(sys.argv[1])\n"
        "if os.environ.get('HEALTH_TOKEN'):\n"
        "    request.add_header('Authorization', 'Bearer ' + os.environ['HEALTH_TOKEN'])\n"
        "try:\n"
        "    with urllib.request.urlopen(request, timeout=10) as reply:\n"
        "        body = json.load(reply)\n"
        "except urllib.error.HTTPError as error:\n"
        "    try:\n"
        "        body = json.load(error)\n"
        "    except ValueError:\n"
        "        body = {'status': 'down', 'error': str(error)}\n"
        "except (OSError, ValueError) as error:\n"
        "    body = {'status': 'down', 'error': str(error)}\n"
        "print(json.dumps(body, sort_keys=True))\n"
    )
    return (
        HEADER
        + "IFS= read -r HEALTH_TOKEN || true\n"
        + f'HEALTH_TOKEN="$HEALTH_TOKEN" python3 -c {q(probe)} {q(url)}\n'
    )


def redis_info(host: str, redis: RedisSettings) -> str:
    """Print a Redis node's INFO replication as `info key:value` lines; only reads."""
    return HEADER + redis_cli_prelude(host, redis) + _replication_info()


def redis_cli_prelude(host: str, redis: RedisSettings) -> str:
    """Read the password from stdin into REDISCLI_AUTH, so it is on no command line.

    With the stack's ACL users, the deploy is a user of its own (DEPLOY_USER, with the same
    password), which works where the default user is off; until the first up made it, and
    after a restart of Redis before our unit set it again, the default user is."""
    address = f"-h {q(redis.host)} -p {redis.port}"
    read = (
        _fail_function(host)
        + "IFS= read -r REDISCLI_AUTH || true\n"
        + 'if [ -n "$REDISCLI_AUTH" ]; then export REDISCLI_AUTH; else unset REDISCLI_AUTH; fi\n'
    )
    if not redis.access.acl_users:
        return read + f'rcli() {{ redis-cli --no-auth-warning {address} -n {redis.db} "$@"; }}\n'
    return (
        read
        + "rcli_as=()\n"
        + 'if command -v redis-cli >/dev/null 2>&1 && [ "$(redis-cli --no-auth-warning'
        + f' --user {DEPLOY_USER} {address} PING 2>/dev/null)" = PONG ]; then'
        + f" rcli_as=(--user {DEPLOY_USER}); fi\n"
        + 'rcli() { redis-cli --no-auth-warning "${rcli_as[@]}"'
        + f' {address} -n {redis.db} "$@"; }}\n'
    )


def redis_identity(host: str, redis: RedisSettings, create: bool) -> str:
    """Print the machine id and a token kept in Redis; with create (an up, never a preview),
    set it when there is none.

    Redis's data is what the steps on this host build, so the token lives there: a Redis that
    lost its data gets a new token. Where Redis cannot be asked yet, the token says so, and
    the preflight then reports why.
    """
    key = q(names.HOST_TOKEN_KEY)
    return (
        HEADER
        + redis_cli_prelude(host, redis)
        + 'echo "machine-id $(cat /etc/machine-id)"\n'
        + "token=unreachable\n"
        + "if command -v redis-cli >/dev/null 2>&1; then\n"
        + (
            "  fresh=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')\n"
            + f'  rcli SET {key} "$fresh" NX >/dev/null 2>&1 || true\n'
            if create
            else ""
        )
        + f"  token=$(rcli --raw GET {key} 2>/dev/null) || token=unreachable\n"
        + '  if [ -z "$token" ] && rcli PING >/dev/null 2>&1; then token=none; fi\n'
        + "fi\n"
        + 'case "$token" in none) ;; ""|*[!0-9a-f]*) token=unreachable ;; esac\n'
        + 'echo "token $token"\n'
        + _replication_info()
    )


def _replication_info() -> str:
    """Print a Redis node's INFO replication fields as `info key:value` lines, if it answers."""
    return (
        "if command -v redis-cli >/dev/null 2>&1; then\n"
        + "  { rcli --raw INFO replication 2>/dev/null || true; } | tr -d '\\r'"
        + " | grep -E '^(role|master_host|master_port|master_link_status|master_repl_offset"
        + "|slave[0-9]+):' | sed 's/^/info /' || true\n"
        + "fi\n"
    )


def redis_replica_identity(install_dir: str, host: str, redis: RedisSettings, create: bool) -> str:
    """A replica's identity: the machine id and a token in a file, as on the orchestrator,
    since its Redis data is the primary's (a token kept there would be the primary's); then
    its INFO replication."""
    return (
        orchestrator_identity(install_dir, create)
        + redis_cli_prelude(host, redis)
        + _replication_info()
    )


def redis_preflight(host: str, redis: RedisSettings, install_os_packages: bool) -> str:
    """Check that redis-cli exists (installing redis-tools if allowed) and Redis answers PING."""
    install = "yes" if install_os_packages else "no"
    return (
        HEADER
        + redis_cli_prelude(host, redis)
        + f"install_os_packages={install}\n"
        + "if ! command -v redis-cli >/dev/null 2>&1; then\n"
        + '  [ "$install_os_packages" = yes ]'
        + ' || fail "redis-cli is missing'
        + ' (install redis-tools, or set installOsPackages to true)"\n'
        + "  export DEBIAN_FRONTEND=noninteractive\n"
        + "  { apt-get update -qq && apt-get install -y -qq redis-tools; } >&2"
        + ' || fail "redis-cli is missing and apt-get could not install redis-tools"\n'
        + "fi\n"
        + "answer=$(rcli PING 2>&1) || true\n"
        + '[ "$answer" = PONG ]'
        + f' || fail "Redis at {redis.host}:{redis.port} does not answer PING: $answer"\n'
        + "echo PONG\n"
    )


def redis_groups(host: str, redis: RedisSettings) -> str:
    """Create both streams and every group of the service's group plan, then list them.

    Each group starts where the service itself would start it (the worker group at 0, so
    tasks queued before the deploy are not skipped). BUSYGROUP means the group is already
    there, which is the idempotent case. The last line printed is JSON: each stream and its
    group names, as Redis reports them.
    """
    creates = "".join(
        f"create {q(spec.stream)} {q(spec.group)} {q(spec.start_id)}\n" for spec in redis.groups
    )
    listing = " ".join(q(stream) for stream in redis.streams)
    return (
        HEADER
        + redis_cli_prelude(host, redis)
        + "create() {\n"
        + '  local answer\n  answer=$(rcli XGROUP CREATE "$1" "$2" "$3" MKSTREAM 2>&1) || true\n'
        + '  case "$answer" in\n'
        + "    OK|BUSYGROUP*) ;;\n"
        + '    *) fail "XGROUP CREATE $1 $2: $answer" ;;\n'
        + "  esac\n"
        + "}\n"
        + creates
        + "printf '{'\nsep=''\n"
        + f"for stream in {listing}; do\n"
        + '  printf \'%s"%s":[\' "$sep" "$stream"\n'
        + "  inner=''\n"
        + "  while IFS= read -r group; do\n"
        + '    printf \'%s"%s"\' "$inner" "$group"; inner=\',\'\n'
        + '  done < <(rcli --raw XINFO GROUPS "$stream"'
        + " | awk 'prev == \"name\" { print } { prev = $0 }')\n"
        + "  printf ']'\n  sep=','\n"
        + "done\n"
        + "printf '}\\n'\n"
    )


def redis_drop(host: str, redis: RedisSettings) -> str:
    """Delete both streams and their groups; only used when dropStreamsOnDestroy is set."""
    keys = " ".join(q(key) for key in (*redis.streams, *redis.companion_keys))
    return HEADER + redis_cli_prelude(host, redis) + f"rcli DEL {keys} >/dev/null\necho dropped\n"
