"""scripts/pulumi-toolchain where a piece is missing: one line that says what to do."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pulumi-toolchain"
FAKE_PULUMI = "#!/bin/sh\n# stands in for the CLI: knows no plugin\nexit 0\n"


def _run(bin_dir: Path, tmp_path: Path, on_path: bool) -> subprocess.CompletedProcess[str]:
    path = f"{bin_dir}:/usr/bin:/bin" if on_path else "/usr/bin:/bin"
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "SHIELD_TOOLCHAIN_CACHE": str(tmp_path / "cache"),
        "SHIELD_THIRD_PARTY": str(tmp_path / "no-third-party"),
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )


def _fake_cli(directory: Path) -> Path:
    directory.mkdir(parents=True)
    cli = directory / "pulumi"
    cli.write_text(FAKE_PULUMI)
    cli.chmod(0o755)
    return directory


def test_a_built_cli_without_third_party_says_in_one_line_what_to_do(tmp_path: Path) -> None:
    _fake_cli(tmp_path / "cache" / "v3.274.1" / "bin")
    result = _run(tmp_path / "unused", tmp_path, on_path=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no pulumi-language-python here" in lines[0]
    assert "third_party" in lines[0] and "install Pulumi" in lines[0]


def test_an_installed_pulumi_is_used_and_fetches_the_provider_itself(tmp_path: Path) -> None:
    bin_dir = _fake_cli(tmp_path / "installed")
    host = bin_dir / "pulumi-language-python"
    host.write_text("#!/bin/sh\n")
    host.chmod(0o755)
    (bin_dir / "pulumi-language-python-exec").write_text("")
    result = _run(bin_dir, tmp_path, on_path=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(bin_dir)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "command provider v1.2.1 not installed" in lines[0]
