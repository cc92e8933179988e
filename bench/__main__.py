"""`python -m bench [--quick] [--only SECTION,...]`: every measurement side by side, and a report.

The full run takes a while on 2 cores; the pinned peers must be installed first (`make bench`
runs `python -m bench.peers.install`), and a peer that is not installed is reported as such.
--quick shrinks every dimension, to check that the harness works, not to quote. --only runs
the named sections and merges them into the results.json already in --out, leaving the
other sections as they were measured: fanout, fanout-peers, queue, queue-peers (the raw loop
and the peers only), deploy (rebuilds the lab), scale.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.sections import FULL_RUN, SECTIONS
from bench.servers import raise_fd_limit
from bench.targets import targets

RESULTS = Path(__file__).resolve().parent / "results"


def section_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        named = ", ".join(unknown) or "(none)"
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {named}; choose: {', '.join(SECTIONS)}"
        )
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run to check the harness")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", type=section_names, help="comma-separated sections, merged")
    parser.add_argument(
        "--report-only", action="store_true", help="re-render the report from results.json"
    )
    parser.add_argument("--deploy-only", action="store_true", help="the same as --only deploy")
    parser.add_argument("--scale-only", action="store_true", help="the same as --only scale")
    args = parser.parse_args(argv)
    if args.deploy_only or args.scale_only:
        args.only = ["deploy"] if args.deploy_only else ["scale"]
    return args


def measure(names: list[str], quick: bool, results: dict[str, Any], out: Path) -> None:
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            SECTIONS[name](results, quick, Path(workdir) / name, out)
            results.setdefault("sections_measured", {})[name] = datetime.now(UTC).isoformat(
                timespec="seconds"
            )
            # Kept after each section: a later one that fails loses only itself, and
            # `--only` the rest merges into what is here.
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    saved = args.out / "results.json"
    if args.report_only or args.only:
        results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
        if args.only:
            measure(args.only, args.quick, results, args.out)
    else:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        results = {
            "command": "make bench" + (" (python -m bench --quick)" if args.quick else ""),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            "started": started,
        }
        measure(list(FULL_RUN), args.quick, results, args.out)
    results.setdefault("command", "python -m bench " + " ".join(sys.argv[1:]))
    results.setdefault("machine", f"{platform.machine()}, Python {platform.python_version()}")
    results.setdefault("started", datetime.now(UTC).isoformat(timespec="seconds"))
    results["targets"] = targets(results)
    print(f"report: {report.write(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
