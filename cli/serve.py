"""`zoo serve`: the HTTP API and the gallery page (serving/http) under uvicorn. Several workers are several
processes, each loading the search engine from Postgres and working the shared job queue; replicas on other hosts
do the same with the same DATABASE_URL."""

from __future__ import annotations

import argparse

from cli.output import EXIT_OK, err, usage_error
from config import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from db.engine import get_engine
    from db.migrate import ensure_migrated

    if not 0 < args.port < 65536 or args.workers < 1:
        return usage_error("--port must be 1..65535 and --workers at least 1")
    ensure_migrated(get_engine(settings))  # once, before the workers start (each would otherwise race to it)
    err.print(f"zoo serve: http://{args.host}:{args.port} (the gallery at /, OpenAPI at /docs), "
              f"{args.workers} worker(s)")
    uvicorn.run("serving.http.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, proxy_headers=True, forwarded_allow_ips="*"
                if args.behind_proxy else None)
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="the HTTP API (search, cards, lookups, inspect, generate/edit jobs) and the gallery page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="processes; each loads the engine from Postgres and runs one studio job at a time")
    serve.add_argument("--behind-proxy", action="store_true",
                       help="trust X-Forwarded-* headers from any address (a load balancer in front)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(handler=cmd_serve)
