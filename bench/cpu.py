"""CPU time per proxied request: the gateway (1 worker, signed in) beside the bare proxy.

    .venv/bin/python bench/cpu.py [--rounds 3] [--duration 5] [--py-spy]

req/s on a small shared machine moves with whatever else runs; the CPU time a
server process spends per answered request (utime + stime from /proc/PID/stat
over a wrk run, divided by the requests wrk counted) moves much less. This is
how the figures in bench/PROFILE.md were measured: the two servers are loaded
in turn, round after round, and the medians are printed. `--py-spy` then
records 10 s of each under load (py-spy must be installed in the venv) into
raw collapsed stacks, for a flame graph or a diff by function.

`--variant` runs the gateway through bench/variants.py (parts of its hot path
swapped out, see there): the experiments that say where the time goes.

It starts what run.py starts for scenarios c1 and f1 (static nginx, database,
`gateway serve --workers 1`, bare_proxy.py --workers 1), nothing else, and
writes nothing in the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import run as bench  # bench/run.py: the same processes, configs and helpers

VARIANTS = Path(__file__).resolve().with_name("variants.py")
AUTH_PATH = "/_gateway/auth"  # the gateway's, and bare_proxy.py's stand-in


def cpu_ticks(pids: list[int]) -> int:
    return sum(bench.process_jiffies(pid) for pid in pids)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="load each server R times")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--py-spy", action="store_true", help="also record py-spy profiles")
    parser.add_argument(
        "--variant", default="", help="run the gateway through bench/variants.py with these"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="load /auth (nginx's question, from a trusted peer) instead of the proxy",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, profiles)")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 120 and args.connections >= 1):
        parser.error("out of range: --rounds/--duration/--connections")
    return args


def measure(args: argparse.Namespace, work: Path, procs: bench.Processes) -> None:
    nginx, wrk = bench.ensure_tools()
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"x" * (bench.STATIC_BYTES - 1) + b"\n")
    up = bench.free_port()
    bench.start_nginx(procs, nginx, work, "nginx-static", bench.static_site(up, www), up, 1)

    with bench.database(work) as (db_url, external):
        username = f"bench-{secrets.token_hex(4)}"
        asyncio.run(bench._create_user(db_url, username))
        try:
            port = bench.free_port()
            config = work / "gateway.toml"
            bench.gateway_config(config, port, db_url, up)
            entry = [str(VARIANTS), args.variant] if args.variant else ["-m", "gateway"]
            argv = [sys.executable, *entry, "serve", "-c", str(config), "--workers", "1"]
            gateway = bench.start_python_server(procs, "gateway", argv, port, 1)
            bare_port = bench.free_port()
            argv = [sys.executable, str(bench.BARE_PROXY), "--listen", f"{bench.HOST}:{bare_port}"]
            argv += ["--upstream", f"http://{bench.HOST}:{up}", "--workers", "1"]
            bare = bench.start_python_server(procs, "bare-proxy", argv, bare_port, 1)
            token = bench.sign_in(port, username)[0]
            cookie = f"Cookie: {bench.SESSION_COOKIE}={token}"
            # --auth: the question nginx asks per request; the floor answers it bare.
            asked = [f"X-Original-URL: http://{bench.HOST}:{up}{bench.PATH}"] if args.auth else []
            servers = {
                "gateway": (gateway, [cookie, *asked]),
                "bare proxy": (bare, asked),
            }
            load(args, wrk, servers)
            if args.py_spy:
                record(args, wrk, work, servers)
        finally:
            procs.stop_all()
            if external:
                asyncio.run(bench._delete_user(db_url, username))


def load(args: argparse.Namespace, wrk: str, servers: dict) -> None:
    def one(server: bench.Server, headers: list[str], seconds: int) -> tuple[float, float]:
        before = cpu_ticks(server.pids)
        result = bench.run_wrk(
            wrk,
            f"http://{bench.HOST}:{server.port}{AUTH_PATH if args.auth else bench.PATH}",
            threads=1,
            connections=args.connections,
            duration=seconds,
            timeout=5,
            headers=headers,
        )
        if result.non_2xx_3xx or result.socket_errors:
            raise bench.BenchError(f"errors under load: {result.raw}")
        used = (cpu_ticks(server.pids) - before) / bench.HZ
        return result.rps, used / max(1, result.requests) * 1e6

    for server, headers in servers.values():
        one(server, headers, 2)  # warm-up
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, (server, headers) in servers.items():
            found[name].append(one(server, headers, args.duration))
    for name, runs in found.items():
        each = "  ".join(f"{rps:,.0f} req/s {us:.0f} µs" for rps, us in runs)
        print(f"{name:>11}: {each}")
    cpu = {name: statistics.median(us for _, us in runs) for name, runs in found.items()}
    print(
        f"median CPU per request: gateway {cpu['gateway']:.0f} µs, "
        f"bare proxy {cpu['bare proxy']:.0f} µs, "
        f"bare/gateway = {cpu['bare proxy'] / cpu['gateway']:.2f} (what c/f would be on CPU alone)"
    )


def record(args: argparse.Namespace, wrk: str, work: Path, servers: dict) -> None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise bench.BenchError(f"--py-spy: {spy} is missing (.venv/bin/pip install py-spy)")
    for name, (server, headers) in servers.items():
        flags = [x for header in headers for x in ("-H", header)]
        url = f"http://{bench.HOST}:{server.port}{AUTH_PATH if args.auth else bench.PATH}"
        with subprocess.Popen(
            [wrk, "-t1", f"-c{args.connections}", "-d12s", *flags, url],
            stdout=subprocess.DEVNULL,
        ) as load_proc:
            out = work / f"py-spy-{name.replace(' ', '-')}.txt"
            subprocess.run(
                [
                    str(spy),
                    "record",
                    "-p",
                    str(server.pids[0]),
                    "-d",
                    "10",
                    "-r",
                    "500",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "--nonblocking",
                ],
                capture_output=True,
                check=True,
            )
            load_proc.wait()
        print(f"py-spy ({name}): {out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gateway-cpu-"))
    procs = bench.Processes(work)
    try:
        measure(args, work, procs)
        return 0
    except bench.BenchError as exc:
        print(f"bench/cpu.py: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep or args.py_spy:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
