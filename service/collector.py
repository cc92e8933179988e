"""The metrics-collector's entry point, run beside the workers: ``python -m service.collector``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from redis.exceptions import RedisError

from service.core.consumer_groups import ensure_all_groups
from service.core.redis_client import create_redis
from service.core.settings import ConfigError, Settings, load_settings
from service.events.collector import MetricsCollector

log = logging.getLogger("service.collector")


def default_consumer_name() -> str:
    """Host plus pid, unique among live collectors."""
    return f"{socket.gethostname()}-{os.getpid()}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.collector",
        description="Read both streams in the metrics-collector group until stopped.",
    )
    parser.add_argument("--consumer", default=None, help="consumer name (default: host-pid)")
    return parser.parse_args(argv)


async def serve(settings: Settings, consumer: str) -> None:
    """Run the collector until SIGTERM or SIGINT, then stop it between two batches."""
    # The blocking read and the transaction that records and acks: two connections at most.
    redis = create_redis(settings, max_connections=2)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        try:
            await ensure_all_groups(redis, settings)
        except RedisError as error:
            # Like the API and the workers: start without Redis and read once it is back.
            log.warning("could not create consumer groups at start: %s", error)
        collector = MetricsCollector(redis, settings, consumer)
        await collector.start()
        log.info("metrics collector %s reading", consumer)
        await stopping.wait()
        await collector.stop()
        log.info("metrics collector %s stopped", consumer)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings, args.consumer or default_consumer_name()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
