"""`curacache` command line: serve, gateway, fake-llm, placement.

Each subcommand imports what it runs only when it runs, so the gateway (and the SDK) work on the
light install (`pip install curacache`) without the service's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curacache.server.config import ServerConfig


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC service")
    p.add_argument("--config", type=Path, help="TOML config file (default: $CURACACHE_CONFIG)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 50051; 0 picks a free one)")
    p.add_argument("--data-dir", type=Path, help="SQLite data directory (default ./data)")
    p.add_argument("--storage", choices=("sqlite", "redis"), help="document store (default sqlite)")
    p.add_argument("--redis-url", help="Redis URL when --storage redis")
    p.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, each a replica of the store (default 1)",
    )
    p.add_argument(
        "--group",
        help="replica group: serve only the collections the store's placement map gives it",
    )
    p.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on HOST:PORT/metrics (0: any)"
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per RPC (method, tenant, status, ms) to logger curacache.access",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers
    p.set_defaults(run=_serve)


def _serve_config(args: argparse.Namespace) -> ServerConfig:
    from curacache.server.config import load_config

    config_file = args.config or (
        Path(os.environ["CURACACHE_CONFIG"]) if os.environ.get("CURACACHE_CONFIG") else None
    )
    return load_config(
        file=config_file,
        overrides={
            "host": args.host,
            "port": args.port,
            "storage.data_dir": args.data_dir,
            "storage.kind": args.storage,
            "storage.redis_url": args.redis_url,
            "workers": args.workers,
            "group": args.group,
            "metrics_port": args.metrics_port,
            "access_log": args.access_log,
        },
    )


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The flags a worker needs to load the same configuration (the port is added after)."""
    argv = []
    for flag, value in (
        ("--config", args.config),
        ("--host", args.host),
        ("--data-dir", args.data_dir),
        ("--storage", args.storage),
        ("--redis-url", args.redis_url),
        ("--workers", args.workers),
        ("--group", args.group),
        ("--log-level", args.log_level),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.access_log:
        argv.append("--access-log")
    return argv


async def _serve_async(config: ServerConfig) -> None:
    from curacache.server.app import create_server, describe_store
    from curacache.server.memory import fix_mmap_threshold, limit_malloc_arenas

    # Before the store, the indexes and the thread pools allocate.
    if config.malloc_arenas:
        limit_malloc_arenas(config.malloc_arenas)
    if config.malloc_mmap_threshold:
        fix_mmap_threshold(config.malloc_mmap_threshold)
    server, port = await create_server(config)
    await server.start()
    auth = "on" if config.auth.enabled else "OFF (loopback only)"
    tls = "TLS" if config.tls.enabled else "plaintext"
    print(
        f"curacache listening on {config.host}:{port} ({tls}, auth {auth}); "
        f"store: {describe_store(config.storage)}"
        + (
            f"; metrics on http://{config.host}:{server.metrics_port}/metrics"
            if server.metrics_port
            else ""
        ),
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
    from curacache.server.config import ConfigError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(
        logging.WARNING
    )  # it narrates CPU-feature probing at INFO
    try:
        config = _serve_config(args)
        if config.workers > 1 and not args.worker:
            from curacache.server.app import describe_store
            from curacache.server.workers import run_workers

            return run_workers(
                _worker_argv(args),
                workers=config.workers,
                host=config.host,
                port=config.port,
                banner=f"store: {describe_store(config.storage)}",
                metrics_port=config.metrics_port,
            )
        asyncio.run(_serve_async(config))
    except ConfigError as exc:
        print(f"curacache: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def _placement_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "placement",
        help="show or set the store's placement map (collections on replica groups)",
        description="Replica groups (`serve --group NAME`) serve only the collections the "
        "store's placement map gives them. `show` prints the map; `set --groups a,b` plans a "
        "new one from the collections' stored sizes (rebalancing the current map: only what "
        "must move moves) and stores it; running replicas follow it through the change log.",
    )
    p.add_argument("action", choices=("show", "set"))
    p.add_argument("--groups", help="set: the replica groups, comma-separated")
    p.add_argument(
        "--pin", action="append", default=[], metavar="COLLECTION=GROUP", help="set: fix one"
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: $CURACACHE_CONFIG)")
    p.add_argument("--data-dir", type=Path, help="SQLite data directory (default ./data)")
    p.add_argument("--storage", choices=("sqlite", "redis"), help="document store (default sqlite)")
    p.add_argument("--redis-url", help="Redis URL when --storage redis")
    p.set_defaults(run=_placement)


def _placement(args: argparse.Namespace) -> int:
    from curacache.server.app import STORES
    from curacache.server.config import ConfigError, load_config
    from curacache.server.placement_book import plan_placement, save_placement, stored_placement

    try:
        config = load_config(
            file=args.config,
            overrides={
                "storage.data_dir": args.data_dir,
                "storage.kind": args.storage,
                "storage.redis_url": args.redis_url,
            },
        )
    except ConfigError as exc:
        print(f"curacache: configuration error: {exc}", file=sys.stderr)
        return 2
    store = STORES[config.storage.kind](config.storage)
    try:
        if args.action == "show":
            current = stored_placement(store)
            print(current.to_json() if current else "no placement map: every replica serves all")
            return 0
        groups = [g.strip() for g in (args.groups or "").split(",") if g.strip()]
        pins = dict(p.partition("=")[::2] for p in args.pin)
        try:
            if not groups:
                raise ValueError("--groups: at least one group is needed")
            planned = plan_placement(store, groups, pins)
            save_placement(store, planned)
        except ValueError as exc:
            print(f"curacache: {exc}", file=sys.stderr)
            return 2
        print(planned.to_json())
        return 0
    finally:
        store.close()


def _fake_llm_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fake-llm",
        help="run an OpenAI-compatible LLM backend SIMULATOR (a test and load-test tool, not a model)",
        description="OpenAI-compatible LLM backend simulator for tests and load tests: deterministic "
        "text from the request, GPU-like timing (TTFT, tokens/s, limited concurrent sequences with a "
        "FIFO queue) and fault injection. Force a fault per request with the header "
        "`x-fake-fault: 429|503|drop|hang[,times=N][,retry-after=S]` or a prompt marker "
        "`[[fake-fault:...]]`. It is not a language model.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8000, help="port to bind (default 8000; 0 picks a free one)"
    )
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        help="model name served (repeatable; default fake-llm)",
    )
    p.add_argument(
        "--ttft-ms",
        type=float,
        default=50.0,
        help="time to first token once a sequence has a slot (default 50)",
    )
    p.add_argument(
        "--tokens-per-s", type=float, default=50.0, help="decode speed per sequence (default 50)"
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=8,
        help="sequences decoded at once; the rest queue FIFO (default 8)",
    )
    p.add_argument(
        "--fail-429-rate",
        type=float,
        default=0.0,
        help="share of requests answered 429 + Retry-After",
    )
    p.add_argument(
        "--fail-503-rate", type=float, default=0.0, help="share of requests answered 503"
    )
    p.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="share of requests whose connection drops mid-answer",
    )
    p.add_argument("--hang-rate", type=float, default=0.0, help="share of requests never answered")
    p.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="Retry-After seconds sent with 429/503 (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    p.set_defaults(run=_fake_llm)


def _fake_llm(args: argparse.Namespace) -> int:
    from curacache.llm.simulator import SimConfig, serve

    try:
        config = SimConfig(
            models=tuple(args.models or ("fake-llm",)),
            ttft_ms=args.ttft_ms,
            tokens_per_s=args.tokens_per_s,
            max_concurrency=args.max_concurrency,
            fail_429_rate=args.fail_429_rate,
            fail_503_rate=args.fail_503_rate,
            drop_rate=args.drop_rate,
            hang_rate=args.hang_rate,
            retry_after_s=args.retry_after,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"curacache fake-llm: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config=config, host=args.host, port=args.port, stop=stop)

    asyncio.run(run())
    return 0


def _gateway_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the OpenAI-compatible HTTP gateway in front of the service",
        description="OpenAI-compatible HTTP gateway: point any OpenAI client's base URL at "
        "http://LISTEN/v1 and its chat/completions requests go through the semantic cache.",
    )
    p.add_argument(
        "--listen", help="HOST:PORT to serve HTTP on (default 127.0.0.1:8080; port 0 picks one)"
    )
    p.add_argument("--server", help="HOST:PORT of the curacache service (default 127.0.0.1:50051)")
    p.add_argument("--config", type=Path, help="TOML gateway config (keys, service_key, limits)")
    p.set_defaults(run=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    from curacache.gateway.app import serve
    from curacache.gateway.config import GatewayConfigError, load_gateway_config

    try:
        config = load_gateway_config(
            file=args.config, overrides={"listen": args.listen, "server": args.server}
        )
    except GatewayConfigError as exc:
        print(f"curacache gateway: configuration error: {exc}", file=sys.stderr)
        return 2

    def ready(port: int) -> None:
        auth = (
            f"{len(config.keys)} keys"
            if config.keys
            else f"no keys (loopback only, tenant {config.default_tenant!r})"
        )
        print(
            f"curacache gateway listening on http://{config.host}:{port}/v1 -> service {config.server}; {auth}",
            flush=True,
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop=stop, ready=ready)

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curacache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _gateway_parser(sub)
    _fake_llm_parser(sub)
    _placement_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
