"""`curacache` command line: serve (more subcommands join as features land)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from curacache.server.config import ConfigError, load_config


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC service")
    p.add_argument("--config", type=Path, help="TOML config file (default: $CURACACHE_CONFIG)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 50051; 0 picks a free one)")
    p.add_argument("--data-dir", type=Path, help="SQLite data directory (default ./data)")
    p.add_argument("--storage", choices=("sqlite", "redis"), help="document store (default sqlite)")
    p.add_argument("--redis-url", help="Redis URL when --storage redis")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(run=_serve)


async def _serve_async(args: argparse.Namespace) -> None:
    from curacache.server.app import create_server, describe_store

    config_file = args.config or (Path(os.environ["CURACACHE_CONFIG"]) if os.environ.get("CURACACHE_CONFIG") else None)
    config = load_config(
        file=config_file,
        overrides={
            "host": args.host,
            "port": args.port,
            "storage.data_dir": args.data_dir,
            "storage.kind": args.storage,
            "storage.redis_url": args.redis_url,
        },
    )
    server, port = await create_server(config)
    await server.start()
    auth = "on" if config.auth.enabled else "OFF (loopback only)"
    tls = "TLS" if config.tls.enabled else "plaintext"
    print(
        f"curacache listening on {config.host}:{port} ({tls}, auth {auth}); "
        f"store: {describe_store(config.storage)}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("curacache: shutting down (draining in-flight requests)", flush=True)
    await server.stop()


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it narrates CPU-feature probing at INFO
    try:
        asyncio.run(_serve_async(args))
    except ConfigError as exc:
        print(f"curacache: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curacache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
