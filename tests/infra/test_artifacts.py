"""What the release tarball carries to the orchestrator host."""

from __future__ import annotations

from pathlib import Path

from infra.artifacts import REPO_ROOT, service_files


def test_the_release_ships_every_file_the_service_serves_or_runs() -> None:
    shipped = set(service_files())
    package = REPO_ROOT / "service"
    wanted = {
        path.relative_to(REPO_ROOT)
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert wanted - shipped == set()
    assert Path("service/static/dashboard.html") in shipped
