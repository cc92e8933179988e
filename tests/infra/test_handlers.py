"""Issue 15's infra side: a stack that deploys workers names its handler, and ships it."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from infra.artifacts import digest_text
from infra.config import StackConfigError, load
from tests.infra.support import (
    API_TOKEN,
    BASE_CONFIG,
    REDIS_PASSWORD,
    SSH_KEY,
    TLS_SECRETS,
    ProgramRun,
    config_source,
    plain_strings,
    run_program,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"sshPrivateKey": SSH_KEY}
HANDLER_TOKEN = "handler-token-3b9a7"


@pytest.fixture
def source_root(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "service", root / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(REPO_ROOT / "examples" / "demo_handler", root / "handler_src")
    return root


# humanize 4.12.3 with the sha256 of its wheel and its sdist, as `uv pip compile
# --generate-hashes` prints it (and infra/stacks/lab.yaml holds it).
HUMANIZE = (
    "humanize==4.12.3"
    " --hash=sha256:2cbf6370af06568fa6d2da77c86edb7886f3160ecd19ee1ffef07979efc597f6"
    " --hash=sha256:8430be3a615106fdfceb0b2c1b41c4c98c6b0fc5cc59663a5539b111dd325fb0"
)


def handler_stack(source_root: Path, **extra: str) -> dict[str, str]:
    return {
        **BASE_CONFIG,
        "taskHandler": "python:shield_demo_handler:handle",
        "handlerPath": str(source_root / "handler_src"),
        "handlerRequirements": HUMANIZE,
        **extra,
    }


def script(run: ProgramRun, name: str) -> str:
    return shlex.split(str(run.registered[name].inputs["create"]))[-1]


def _inputs(run: ProgramRun) -> dict[str, object]:
    return {name: item.inputs for name, item in run.registered.items()}


def test_workers_without_a_handler_fail_naming_taskHandler() -> None:  # noqa: N802
    stack = {key: value for key, value in BASE_CONFIG.items() if key != "taskHandler"}
    with pytest.raises(StackConfigError) as error:
        load(config_source(stack, SECRETS))
    assert str(error.value).startswith("shield-orchestrator:taskHandler: is required when")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"taskHandler": "nonsense here"}, "shield-orchestrator:taskHandler: Value error"),
        ({"handlerPath": "/nowhere/at/all"}, "shield-orchestrator:handlerPath: '/nowhere/at/all'"),
        ({"taskHandler": "http:http://h/x"}, "shield-orchestrator:handlerPath: ships Python code"),
        (
            {"handlerRequirements": '["humanize", "--index-url http://evil/simple"]'},
            "shield-orchestrator:handlerRequirements: not a requirement line",
        ),
        (
            {"handlerRequirements": "humanize==4.12.3"},
            "shield-orchestrator:handlerRequirements: 'humanize==4.12.3' must be name==version"
            " --hash=sha256:<hex>",
        ),
        (
            {"handlerRequirements": "humanize>=4 --hash=sha256:" + "0" * 64},
            "shield-orchestrator:handlerRequirements: 'humanize>=4 --hash",
        ),
        (
            {"handlerRequirements": "humanize==4.12.3 --hash=md5:00"},
            "shield-orchestrator:handlerRequirements: 'humanize==4.12.3 --hash=md5:00' must be",
        ),
    ],
)
def test_bad_handler_settings_name_the_key(
    source_root: Path, override: dict[str, str], message: str
) -> None:
    with pytest.raises(StackConfigError) as error:
        load(config_source(handler_stack(source_root, **override), SECRETS))
    assert str(error.value).startswith(message)


def test_a_handler_directory_ships_in_the_release_on_the_workers_import_path(
    tmp_path: Path, source_root: Path
) -> None:
    run = run_program(handler_stack(source_root), tmp_path / "build", source_root, SECRETS)
    release = next((tmp_path / "build").glob("service-*.tar.gz"))
    with tarfile.open(release) as archive:
        names = archive.getnames()
    assert "handler/shield_demo_handler.py" in names and "service/worker.py" in names
    units = script(run, "orchestrator-units")
    assert "Environment=PYTHONPATH=/opt/shield-orchestrator/current/handler\n" in units
    assert units.count("PYTHONPATH") == 1  # the worker's unit only
    assert HUMANIZE + "\n" in script(run, "orchestrator-venv")
    env = run.registered["orchestrator-units"].inputs["stdin"]
    assert 'SHIELD_TASK_HANDLER="python:shield_demo_handler:handle"' in env


def test_changing_the_handlers_code_redeploys_only_the_release(
    tmp_path: Path, source_root: Path
) -> None:
    stack = handler_stack(source_root)
    before = _inputs(run_program(stack, tmp_path / "build", source_root, SECRETS))
    again = _inputs(run_program(stack, tmp_path / "build", source_root, SECRETS))
    assert again == before
    module = source_root / "handler_src" / "shield_demo_handler.py"
    module.write_text(module.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    after = _inputs(run_program(stack, tmp_path / "build", source_root, SECRETS))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"orchestrator-release-copy", "orchestrator-release", "orchestrator-units"}


def test_a_handler_wheel_goes_into_the_wheelhouse_and_the_venv(
    tmp_path: Path, source_root: Path
) -> None:
    wheel = tmp_path / "my_handler-1.2.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a zip, never unpacked here")
    stack = {
        **handler_stack(source_root, handlerPath=str(wheel)),
        "packageSource": "wheelhouse",
        "taskHandler": "python:my_handler:handle",
    }
    locked = (source_root / "service" / "requirements.lock").read_text()
    own = f"my_handler==1.2.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
    combined = locked.rstrip("\n") + f"\n{own}\n{HUMANIZE}\n"
    extra = digest_text(wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest())
    digest = digest_text(combined, "3.11.2", "manylinux2014_x86_64", "manylinux_2_28_x86_64", extra)
    build = tmp_path / "build"
    build.mkdir()
    (build / f"wheelhouse-{digest}.tar").write_bytes(b"")  # already built: no download
    run = run_program(stack, build, source_root, SECRETS)
    assert (
        run.registered["orchestrator-wheelhouse-copy"]
        .inputs["remotePath"]
        .endswith(f"/wheelhouse-{digest}.tar")
    )
    assert f"{own}\n{HUMANIZE}\n" in script(run, "orchestrator-venv")
    assert "PYTHONPATH" not in script(run, "orchestrator-units")
    with pytest.raises(StackConfigError, match="handlerPath: a wheel needs packageSource"):
        load(config_source({**stack, "packageSource": "index"}, SECRETS))


def test_the_handler_token_is_a_secret_that_travels_like_the_password(
    tmp_path: Path, source_root: Path
) -> None:
    secrets = {
        "sshPrivateKey": SSH_KEY,
        "redisPassword": REDIS_PASSWORD,
        "apiToken": API_TOKEN,
        "handlerToken": HANDLER_TOKEN,
    }
    run = run_program(handler_stack(source_root), tmp_path / "build", source_root, secrets)
    leaks = [
        (name, text)
        for name, item in run.registered.items()
        for text in plain_strings(item.raw)
        for secret in secrets.values()
        if secret.strip() in text
    ]
    assert leaks == []
    stdin = run.registered["orchestrator-units"].raw["stdin"]
    assert stdin["value"].count(f'SHIELD_HANDLER_TOKEN="{HANDLER_TOKEN}"') == 1
    assert all(
        HANDLER_TOKEN not in script(run, name)
        for name in run.registered
        if "-" in name and "create" in run.registered[name].inputs
    )


def test_the_lab_stack_names_and_ships_the_demo_handler() -> None:
    stack = yaml.safe_load((REPO_ROOT / "infra" / "stacks" / "lab.yaml").read_text())
    values = {key.split(":", 1)[1]: str(value) for key, value in stack["config"].items()}
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests"
    pins = {"orchestratorHostKey": key, "redisHostKey": key}
    # scripts/deploy-lab sets the lab's Redis passwords and the front's certificate, as secrets.
    users = {"redisPassword": "admin", "redisApiPassword": "api", "redisWorkerPassword": "w"}
    config, _ = load(config_source({**values, **pins}, {**SECRETS, **users, **TLS_SECRETS}))
    assert config.app.task_handler == "python:shield_demo_handler:handle"
    assert config.handler.directory == REPO_ROOT / "examples" / "demo_handler"
    assert config.handler.requirement_lines == (HUMANIZE,)


def test_a_shipped_handler_without_taskHandler_names_taskHandler(source_root: Path) -> None:  # noqa: N802
    stack = {
        key: value for key, value in handler_stack(source_root).items() if key != "taskHandler"
    }
    with pytest.raises(StackConfigError) as error:
        load(config_source(stack, SECRETS))
    assert str(error.value).startswith("shield-orchestrator:taskHandler: is required when")
