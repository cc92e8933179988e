"""Mint a scoped token from the command line, with the service's own SHIELD_* settings.

    python -m service.tokens mint --scope "events:read jobs:read" --job J1 --ttl 3600

The token is the last line of the output (its expiry goes to stderr), so a script can take it
with ``tail -n 1``. Minting needs SHIELD_JWT_SECRET.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service.core.settings import ConfigError, load_settings
from service.core.tokens import MintingUnavailable, TokenAuthority


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.tokens")
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="print a new token as the last line")
    mint.add_argument("--scope", required=True, help='space-separated, e.g. "events:read"')
    mint.add_argument("--job", action="append", dest="jobs", help="a job id or prefix*; repeat")
    mint.add_argument("--type", action="append", dest="types", help="an event type or a.*")
    mint.add_argument("--ttl", type=int, required=True, help="seconds the token is valid")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status."""
    arguments = _parser().parse_args(argv)
    try:
        settings = load_settings()
        secret = settings.jwt_secret
        authority = TokenAuthority(
            settings.jwt_audience, secret.get_secret_value() if secret else None
        )
        minted = authority.mint(arguments.scope, arguments.ttl, arguments.jobs, arguments.types)
    except (ConfigError, MintingUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"expires at {minted.expires_at.isoformat()}", file=sys.stderr)
    print(minted.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
