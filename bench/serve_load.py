"""Load benchmark of `zoo serve`: QPS and p50/p99 latency of `GET /v1/search` with 1, 8 and 32 concurrent clients
against a real server process, the error count, and a search-index generation swap under load.

Starts `zoo serve` (ZOO_STUDIO=off) on the zoo named by --database-url or --pgdata (an embedded server's data
directory), waits for /readyz, then runs closed-loop asyncio clients (httpx2, one keep-alive connection each) over
prompts of the zoo's own SFW example images for --seconds per concurrency level. The swap phase repeats the
--swap-clients level while a separate process builds and stores a new search-index generation (what the
retrieval_index asset does; its commit NOTIFYs the server, whose live engine loads it in the background and swaps
one reference): every request must still answer 200, and the answers must move from the old generation to the new.

The load generator shares the machine's cores with the server: the table reports its CPU (this process's user+sys
over the wall time of each level, as a share of one core and per request) beside the server's (its process tree).
Absolute numbers on a shared 2-core machine are noise; compare runs made side by side.

    python bench/serve_load.py --pgdata /tmp/eng/dump/data --zoo-home /tmp/eng/home [--clients 1,8,32]
        [--seconds 20] [--swap-clients 8] [--no-swap] [--workers 1]

Ends with one JSON line: {"bench": "serve_load", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

P99_TARGET_MS = 50.0  # issue 12: 8 concurrent clients on the dump zoo
FALLBACK_PROMPTS = ("pixel art castle on a hill", "portrait of a woman, oil painting", "anime girl, cherry blossoms",
                    "cyberpunk city at night, neon", "watercolor landscape with mountains", "a cute cat, 3d render")


@dataclass
class Level:
    """One concurrency level's measurements."""

    name: str
    clients: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, 200 answers only
    errors: dict[str, int] = field(default_factory=dict)  # status or exception name -> count
    generations: dict[int, int] = field(default_factory=dict)  # generation that answered -> count
    first_seen: dict[int, float] = field(default_factory=dict)  # generation -> perf_counter of its first answer
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    old_generation: int | None = None  # swap: the generation before, the one stored during the load, its commit
    new_generation: int | None = None
    committed_at: float | None = None
    stop_at: float = 0.0  # perf_counter at which the clients stop

    @property
    def first_new_after(self) -> float | None:
        """Swap: seconds from the new generation's commit to the first answer it gave."""
        seen = self.first_seen.get(self.new_generation)
        return None if seen is None or self.committed_at is None else seen - self.committed_at

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    def row(self) -> dict:
        requests = max(self.requests, 1)
        return {"level": self.name, "clients": self.clients, "requests": self.requests,
                "errors": sum(self.errors.values()), "qps": self.requests / self.wall if self.wall else 0.0,
                "p50_ms": self.ms(50), "p99_ms": self.ms(99), "max_ms": self.ms(100),
                "client_cpu_core": self.client_cpu / self.wall if self.wall else 0.0,
                "client_cpu_ms_per_req": 1000 * self.client_cpu / requests,
                "server_cpu_core": self.server_cpu / self.wall if self.wall else 0.0}


# ---- the zoo and the server --------------------------------------------------------------------------------------

def database_url(args: argparse.Namespace) -> str | None:
    if args.pgdata:
        if not (Path(args.pgdata) / "PG_VERSION").exists():
            return None
        from db.embedded import embedded_database_url

        return embedded_database_url(Path(args.pgdata))
    return args.database_url or os.environ.get("DATABASE_URL")


def sample_prompts(url: str, n: int, seed: int, chars: int) -> list[str]:
    """Prompts of the zoo's SFW example images (what people really typed; the first `chars` characters), a fixed
    sample; a few stock prompts when the zoo has none."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT left(prompt, :chars) FROM images WHERE NOT nsfw AND length(prompt) >= 10 "
                "ORDER BY md5(id::text || :seed) LIMIT :n"),
                {"n": n, "seed": str(seed), "chars": chars}).scalars().all()
    finally:
        engine.dispose()
    return [row.replace("\x00", "") for row in rows] or list(FALLBACK_PROMPTS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(url: str, zoo_home: str | None) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": url, "ZOO_STUDIO": "off", "HF_HUB_OFFLINE": "1"}
    if zoo_home:
        env["ZOO_HOME"] = zoo_home
    return env


def start_server(url: str, zoo_home: str | None, port: int, workers: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", str(workers),
               "--log-level", "warning"]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=server_env(url, zoo_home), stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[1])


async def wait_ready(base: str, server: subprocess.Popen, timeout: float) -> dict:
    import httpx2

    deadline = time.monotonic() + timeout
    async with httpx2.AsyncClient(base_url=base, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"zoo serve exited with {server.returncode}")
            try:
                answer = await client.get("/readyz")
                if answer.status_code == 200:
                    return answer.json()
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"zoo serve not ready after {timeout:.0f} s")


def tree_cpu(pid: int) -> float:
    """User+sys seconds of a process and its live descendants (the uvicorn workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in (root, *root.children(recursive=True)):
            times = process.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- the load --------------------------------------------------------------------------------------------------------

async def client_loop(client, prompts: list[str], offset: int, level: Level, top_k: int) -> None:
    import httpx2

    i = offset
    while time.perf_counter() < level.stop_at:
        prompt = prompts[i % len(prompts)]
        i += 1
        started = time.perf_counter()
        try:
            answer = await client.get("/v1/search", params={"q": prompt, "top_k": top_k})
        except httpx2.HTTPError as error:
            level.errors[type(error).__name__] = level.errors.get(type(error).__name__, 0) + 1
            continue
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            level.errors[str(answer.status_code)] = level.errors.get(str(answer.status_code), 0) + 1
            continue
        level.latencies.append(elapsed)
        generation = answer.json().get("generation")
        level.generations[generation] = level.generations.get(generation, 0) + 1
        level.first_seen.setdefault(generation, time.perf_counter())


async def run_level(base: str, prompts: list[str], level: Level, seconds: float, top_k: int, server_pid: int,
                    during=None) -> None:
    """`level.clients` closed-loop clients for `seconds` (or until `during`, running beside them, moves
    level.stop_at)."""
    import httpx2

    limits = httpx2.Limits(max_connections=level.clients, max_keepalive_connections=level.clients)
    async with httpx2.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        cpu, server_cpu, started = own_cpu(), tree_cpu(server_pid), time.perf_counter()
        level.stop_at = started + seconds
        loops = [client_loop(client, prompts, k * 7919, level, top_k) for k in range(level.clients)]
        await asyncio.gather(*loops, *([during(level)] if during else []))
        level.wall = time.perf_counter() - started
        level.client_cpu, level.server_cpu = own_cpu() - cpu, tree_cpu(server_pid) - server_cpu


def store_generation_process(url: str, zoo_home: str | None, log: Path) -> subprocess.Popen:
    """A separate process that builds and stores a new search-index generation (this file with --store-generation),
    so its CPU is not counted as the load generator's; its stderr goes to `log`."""
    command = [sys.executable, __file__, "--store-generation", "--database-url", url]
    with open(log, "wb") as err:
        return subprocess.Popen(command, env=server_env(url, zoo_home), stdout=subprocess.PIPE, stderr=err, text=True)


def store_generation(url: str) -> int:
    """Build the space's index from the catalogue as it is and store it as a new generation (the commit NOTIFYs every
    server): what the retrieval_index asset's last step does, with the settings' models and serving limits."""
    from config import Settings
    from db.engine import engine_for_url
    from embedding.presets import ModelChoice, build_describer, build_encoders
    from embedding.refresh import describer_key, space_dimension, space_name
    from embedding.search_index import ServingLimits, build_search_index, store_search_index

    settings = Settings.from_env()
    choice = ModelChoice.from_settings(settings)
    text_encoder, image_encoder = build_encoders(choice)
    describer = describer_key(build_describer(choice))
    limits = ServingLimits(max_content_level=settings.max_content_level, likeness=settings.serve_likeness)
    with engine_for_url(url).begin() as conn:
        index = build_search_index(conn, space_name(text_encoder, image_encoder),
                                   space_dimension(text_encoder, image_encoder), describer, limits)
        return store_search_index(conn, index)


def swapper(url: str, zoo_home: str | None, delay: float, tail: float, log: Path):
    """After `delay`, store a new generation in another process; once the server answers from it (or the store
    failed), let the load run `tail` seconds more."""
    async def swap(level: Level) -> None:
        await asyncio.sleep(delay)
        process = store_generation_process(url, zoo_home, log)
        line = await asyncio.to_thread(process.stdout.readline)  # printed right after the commit
        level.committed_at = time.perf_counter()
        await asyncio.to_thread(process.wait)
        level.new_generation = int(line) if process.returncode == 0 and line.strip().isdigit() else None
        while level.new_generation is not None and level.new_generation not in level.first_seen and \
                time.perf_counter() < level.stop_at:
            await asyncio.sleep(0.1)
        level.stop_at = min(level.stop_at, time.perf_counter() + tail)

    return swap


# ---- report ------------------------------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    head = ("level", "clients", "requests", "errors", "qps", "p50_ms", "p99_ms", "max_ms", "client_cpu_core",
            "client_cpu_ms_per_req", "server_cpu_core")
    lines = ["  ".join(f"{h:>10}" for h in head)]
    for row in rows:
        lines.append("  ".join(f"{row[h]:>10.2f}" if isinstance(row[h], float) else f"{row[h]!s:>10}" for h in head))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgdata", help="an embedded Postgres data directory holding the zoo (e.g. the dump zoo)")
    parser.add_argument("--database-url", help="or the zoo's Postgres URL (default: DATABASE_URL)")
    parser.add_argument("--zoo-home", default=os.environ.get("ZOO_HOME"), help="ZOO_HOME of the zoo (its models)")
    parser.add_argument("--clients", default="1,8,32", help="comma list of concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--prompt-chars", type=int, default=1000,
                        help="cut prompts to this many characters (the query encoder's cost grows with length)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="zoo serve --workers")
    parser.add_argument("--swap-clients", type=int, default=8)
    parser.add_argument("--no-swap", dest="swap", action="store_false")
    parser.add_argument("--swap-timeout", type=float, default=600.0,
                        help="the swap level ends 5 s after the new generation's first answer, or after this")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store-generation", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store_generation:
        print(store_generation(args.database_url), flush=True)
        return
    url = database_url(args)
    if not url:
        print("skipped: no zoo (give --pgdata DIR or --database-url / DATABASE_URL)")
        print(json.dumps({"bench": "serve_load", "skipped": "no zoo"}))
        return
    asyncio.run(run(args, url))


async def run(args: argparse.Namespace, url: str) -> None:
    prompts = sample_prompts(url, args.prompts, args.seed, args.prompt_chars)
    random.Random(args.seed).shuffle(prompts)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="serve-load-")) / "server.log"
    started = time.perf_counter()
    server = start_server(url, args.zoo_home, port, args.workers, log)
    try:
        ready = await wait_ready(base, server, args.ready_timeout)
        median = np.median([len(prompt) for prompt in prompts])
        print(f"zoo serve ready in {time.perf_counter() - started:.1f} s: generation {ready['generation']}, "
              f"{ready['versions']} versions, {len(prompts)} prompts (median {median:.0f} chars), "
              f"{args.workers} worker(s); log {log}")
        await run_level(base, prompts, Level("warmup", 4), args.warmup, args.top_k, server.pid)
        levels = []
        for clients in (int(c) for c in args.clients.split(",")):
            level = Level(f"c{clients}", clients)
            await run_level(base, prompts, level, args.seconds, args.top_k, server.pid)
            levels.append(level)
        swap = None
        if args.swap:
            swap = Level(f"swap c{args.swap_clients}", args.swap_clients)
            swap.old_generation = ready["generation"]
            await run_level(base, prompts, swap, args.swap_timeout, args.top_k, server.pid,
                            during=swapper(url, args.zoo_home, delay=3.0, tail=5.0, log=log.with_name("store.log")))
            levels.append(swap)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    report(levels, swap, ready, args)


def report(levels: list[Level], swap: Level | None, ready: dict, args: argparse.Namespace) -> None:
    rows = [level.row() for level in levels]
    print(table(rows))
    errors = {level.name: level.errors for level in levels if level.errors}
    if errors:
        print(f"errors: {errors}")
    headline = {"bench": "serve_load", "versions": ready["versions"], "workers": args.workers,
                "prompt_chars": args.prompt_chars,
                "errors": sum(row["errors"] for row in rows)}
    for row in rows:
        if row["level"].startswith("c"):
            k = row["clients"]
            headline.update({f"qps_{k}": round(row["qps"], 1), f"p50_ms_{k}": round(row["p50_ms"], 1),
                             f"p99_ms_{k}": round(row["p99_ms"], 1),
                             f"client_cpu_ms_per_req_{k}": round(row["client_cpu_ms_per_req"], 2)})
    eight = next((row for row in rows if row["level"] == "c8"), None)
    if eight:
        ok = eight["p99_ms"] <= P99_TARGET_MS and eight["errors"] == 0
        print(f"{'PASS' if ok else 'FAIL'}: 8 clients p99 {eight['p99_ms']:.1f} ms (target <= {P99_TARGET_MS:.0f}), "
              f"{eight['errors']} errors")
    if swap is not None:
        moved = swap.new_generation is not None and swap.generations.get(swap.new_generation, 0) > 0
        lost = sum(swap.errors.values())
        after = None if swap.first_new_after is None else round(swap.first_new_after, 2)
        print(f"{'PASS' if moved and lost == 0 else 'FAIL'}: generation swap under load: {swap.old_generation} -> "
              f"{swap.new_generation}, answers per generation {swap.generations}, {lost} requests lost, the new "
              f"generation's first answer {after} s after its commit")
        headline.update({"swap_from": swap.old_generation, "swap_to": swap.new_generation, "swap_lost": lost,
                         "swap_answered_by_new": swap.generations.get(swap.new_generation, 0),
                         "swap_first_new_s": after})
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
