"""Gateway load benchmark: one command, every scenario in one run, ratios in bench/RESULTS.md.

    .venv/bin/python bench/run.py          (or: make bench)

Starts, all on 127.0.0.1 and all stopped again at the end (also on error or Ctrl+C):

- a static upstream: nginx serving a 1 KiB index.html (access_log off, keep-alive)
- nginx proxy_pass to it, and nginx running the shipped examples/nginx/gateway.conf
  (auth_request to the gateway's /auth, then to the upstream)
- PostgreSQL: embedded in a temp dir, or GATEWAY_DATABASE_URL when set; one user
- `gateway serve --workers 1` and `--workers N` (N = os.cpu_count())
- bench/bare_proxy.py with 1 and N workers: the floor for a Python proxy, and, behind
  one more nginx running the same example config, the floor for a Python auth backend

then measures each with the same wrk settings (a warm-up run first) and writes
bench/RESULTS.md. See bench/README.md for what the scenarios and ratios mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import http.cookies
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXAMPLE = ROOT / "examples" / "nginx" / "gateway.conf"
RESULTS = BENCH / "RESULTS.md"
PROFILE = BENCH / "PROFILE.md"
LOGIN_LUA = BENCH / "login.lua"
BARE_PROXY = BENCH / "bare_proxy.py"

HOST = "127.0.0.1"
PATH = "/index.html"
STATIC_BYTES = 1024
PASSWORD = "bench-" + secrets.token_urlsafe(18)
SESSION_COOKIE = "gateway_session"
CSRF_COOKIE = "gateway_session_csrf"
STATUS_PATH = "/bench_nginx_status"


class BenchError(Exception):
    """The benchmark cannot run: one clear line for the operator."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- tools ------------------------------------------------------------------------


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_tools() -> tuple[str, str]:
    """nginx and wrk from Debian: installed when missing (as root, with apt-get)."""
    missing = [name for name in ("nginx", "wrk") if _which(name) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise BenchError(
                f"{' and '.join(missing)} not installed, and cannot install it here "
                f"(needs root and apt-get): run `sudo apt-get install -y {' '.join(missing)}`"
            )
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", *missing],
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise BenchError(f"`{' '.join(argv)}` failed: {' / '.join(tail)}")
    nginx, wrk = _which("nginx"), _which("wrk")
    if nginx is None or wrk is None:
        raise BenchError("nginx or wrk still not found after installing")
    return nginx, wrk


def tool_version(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


# -- processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Processes:
    """Everything started here, stopped in reverse order by pid (and its own group)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                start_new_session=True,  # Ctrl+C reaches us only; we stop them in order
            )
        finally:
            out.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{proc.name} did not stop in time: killing it")
            # The child leads its own session: whatever is still in it (workers) goes too.
            for pid in session_members(proc.popen.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        self.procs.clear()


def session_members(sid: int) -> list[int]:
    """Processes still in the session our child `sid` created (itself and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                state, pgid, session = fields[0], int(fields[2]), int(fields[3])
                if session == sid and pgid == sid and state != "Z":
                    found.append(int(entry.name))
    return found


def listening_inodes(port: int) -> set[str]:
    """Inodes of the LISTEN sockets on this port (one per SO_REUSEPORT worker)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def listening_pids(proc: Proc, port: int) -> list[int]:
    """Our processes (proc and its descendants) holding a listening socket on port."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    pids = []
    for pid in descendants(proc.popen.pid):
        with contextlib.suppress(OSError):
            fd_dir = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fd_dir / fd) in wanted for fd in os.listdir(fd_dir)):
                pids.append(pid)
    return pids


def uses_uvloop(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def wait_listening(proc: Proc, port: int, workers: int = 1, timeout: float = 60.0) -> None:
    """Until `workers` sockets listen on port (all SO_REUSEPORT workers are up)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise BenchError(
                f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.tail()}"
            )
        if len(listening_inodes(port)) >= workers:
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"{proc.name} not listening on {HOST}:{port} after {timeout:.0f}s:\n{proc.tail()}"
            )
        time.sleep(0.1)


# -- HTTP helpers -----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for header in self.headers.get_all("Set-Cookie") or ():
            parsed = http.cookies.SimpleCookie()
            parsed.load(header)
            jar.update({name: morsel.value for name, morsel in parsed.items()})
        return jar


def request(port: int, method: str, path: str, headers=None, body: str | None = None) -> Reply:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{method} http://{HOST}:{port}{path}: {exc}") from None
    finally:
        conn.close()


def nginx_requests(port: int) -> int:
    """The static nginx's total request count (stub_status), to check what really reached it."""
    text = request(port, "GET", STATUS_PATH).body.decode()
    return int(text.splitlines()[2].split()[2])


# -- nginx ------------------------------------------------------------------------


def nginx_conf(prefix: Path, site: Path, workers: int) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""daemon off;
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def static_site(port: int, root: Path) -> str:
    return f"""
server {{
    listen {HOST}:{port};
    root {root};
    open_file_cache max=64;
    location / {{ }}
    location = {STATUS_PATH} {{ stub_status; }}
}}
"""


def proxy_pass_site(port: int, upstream_port: int) -> str:
    """Plain nginx proxy_pass, with the same upstream keep-alive and headers as the example."""
    return f"""
upstream bench_static {{
    server {HOST}:{upstream_port};
    keepalive 16;
}}
server {{
    listen {HOST}:{port};
    location / {{
        proxy_pass http://bench_static;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
    }}
}}
"""


def render_example(nginx_port: int, gateway_port: int, app_port: int) -> str:
    """The shipped config with only its listen port and its two upstream addresses changed
    (the same rendering as tests/test_nginx.py)."""
    text = EXAMPLE.read_text()
    replacements = [
        (r"listen 80;", f"listen {HOST}:{nginx_port};"),
        (r"server 127\.0\.0\.1:8080;", f"server {HOST}:{gateway_port};"),
        (r"server 127\.0\.0\.1:9000;", f"server {HOST}:{app_port};"),
    ]
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text)
        if count != 1:
            raise BenchError(f"{EXAMPLE}: expected exactly one {pattern!r}, found {count}")
    return text


def start_nginx(
    procs: Processes, nginx: str, work: Path, name: str, site: str, port: int, workers: int
) -> Proc:
    prefix = work / name
    prefix.mkdir()
    (prefix / "site.conf").write_text(site)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, prefix / "site.conf", workers))
    base = [nginx, "-e", str(prefix / "error.log"), "-p", str(prefix), "-c", str(conf)]
    check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"nginx ({name}) config rejected:\n{check.stderr.strip()}")
    proc = procs.start(name, base)
    wait_listening(proc, port)
    return proc


# -- database and gateway ---------------------------------------------------------


async def _create_user(url: str, username: str) -> None:
    import asyncpg

    from gateway.policy.passwords import Passwords
    from gateway.store import users
    from gateway.store.db import prepare_database

    await prepare_database(url, "")  # migrations, once, before any gateway starts
    passwords = Passwords(workers=1)
    try:
        password_hash = passwords.hash(PASSWORD)
    finally:
        passwords.close()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await users.add_user(
            conn,
            username,
            password_hash,
            email=f"{username}@example.com",
            name="Bench User",
            groups=("staff",),
        )
    finally:
        await conn.close()


async def _delete_user(url: str, username: str) -> None:
    import asyncpg

    from gateway.store import users

    conn = await asyncpg.connect(url, timeout=10)
    try:
        await users.delete_user(conn, username)
    finally:
        await conn.close()


def gateway_config(path: Path, port: int, db_url: str, upstream_port: int) -> None:
    path.write_text(f"""# written by bench/run.py
[server]
listen = "{HOST}:{port}"
public_url = "http://{HOST}:{port}"

[database]
url = {json.dumps(db_url)}

[login]                           # the login benchmark signs in thousands of times
max_failures_per_user = 1000000
max_failures_per_ip = 1000000

[log]
level = "warning"
access_log = false                # logging would dominate the measurement

[[upstream]]
name = "app"
url = "http://{HOST}:{upstream_port}"
""")


def clean_env() -> dict[str, str]:
    """Our environment minus GATEWAY_* overrides: the temp config says everything."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def sign_in(port: int, username: str) -> tuple[str, str, str]:
    """GET the form (CSRF cookie + token), POST it: (session token, csrf nonce, csrf token)."""
    form = request(port, "GET", "/_gateway/login?rd=/")
    if form.status != 200:
        raise BenchError(f"GET /_gateway/login on :{port} answered {form.status}")
    nonce = form.cookies().get(CSRF_COOKIE)
    match = re.search(r'name="csrf_token" value="([^"]+)"', form.body.decode())
    if not nonce or not match:
        raise BenchError(f"login form on :{port} has no CSRF cookie or token")
    token = match.group(1)
    body = urlencode({"csrf_token": token, "rd": "/", "username": username, "password": PASSWORD})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"{CSRF_COOKIE}={nonce}",
    }
    answer = request(port, "POST", "/_gateway/login", headers, body)
    session = answer.cookies().get(SESSION_COOKIE)
    if answer.status != 303 or not session:
        raise BenchError(
            f"sign-in through :{port} answered {answer.status}, not 303 with a session cookie"
        )
    return session, nonce, token


# -- wrk --------------------------------------------------------------------------


@dataclass
class Settings:
    threads: int
    connections: int
    duration: int
    warmup: int
    login_connections: int
    rounds: int = 1
    timeout: int = 5

    def describe(self) -> str:
        return (
            f"`wrk -t{self.threads} -c{self.connections} -d{self.duration}s --latency "
            f"--timeout {self.timeout}s` after a {self.warmup}s warm-up with the same settings"
        )


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)
    raw: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    result = WrkResult(raw=text)
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M):
        result.requests = int(m.group(1))
        result.seconds = _ms(m.group(2) + m.group(3)) / 1000
    if m := re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M):
        result.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", text, re.M):
        result.p50_ms = _ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", text, re.M):
        result.p99_ms = _ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        result.non_2xx_3xx = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        result.socket_errors = {
            k: int(v)
            for k, v in zip(("connect", "read", "write", "timeout"), m.groups(), strict=True)
        }
    for m in re.finditer(r"^(LOGIN_\w+) (\d+)$", text, re.M):
        result.extra[m.group(1)] = int(m.group(2))
    if not result.requests or not result.rps:
        raise BenchError(f"could not read wrk's output:\n{text}")
    return result


def run_wrk(
    wrk: str,
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    timeout: int,
    headers: list[str] = (),
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> WrkResult:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        f"{timeout}s",
    ]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=duration + timeout + 30
    )
    if done.returncode != 0:
        raise BenchError(
            f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return parse_wrk(done.stdout)


# -- scenarios --------------------------------------------------------------------


@dataclass
class Scenario:
    key: str  # a, b, f1, c1, f2, c2, g1, d1, g2, d2, e
    title: str
    port: int
    headers: list[str] = field(default_factory=list)
    login: bool = False
    needs: list[Proc] = field(default_factory=list)  # the processes serving it
    runs: list[WrkResult] = field(default_factory=list)
    upstream_hits: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.problems

    @property
    def result(self) -> WrkResult | None:
        """The run, or with several rounds the median of each figure."""
        if len(self.runs) <= 1:
            return self.runs[0] if self.runs else None
        runs = self.runs
        errors: dict[str, int] = {}
        extra: dict[str, int] = {}
        for r in runs:
            for k, v in r.socket_errors.items():
                errors[k] = errors.get(k, 0) + v
            for k, v in r.extra.items():
                extra[k] = extra.get(k, 0) + v
        return WrkResult(
            requests=sum(r.requests for r in runs),
            seconds=sum(r.seconds for r in runs),
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            non_2xx_3xx=sum(r.non_2xx_3xx for r in runs),
            socket_errors=errors,
            extra=extra,
            raw="\n\n".join(f"# round {i}\n{r.raw.rstrip()}" for i, r in enumerate(runs, 1)),
        )


def exited(procs: list[Proc]) -> str:
    """'gateway-2 exited with status 0' for each of procs that is no longer running."""
    return ", ".join(
        f"{p.name} exited with status {p.popen.returncode}"
        for p in procs
        if p.popen.poll() is not None
    )


def preflight(s: Scenario, static: bytes) -> None:
    """One request by hand before loading: the scenario must really serve the file."""
    headers = dict(h.split(": ", 1) for h in s.headers)
    reply = request(s.port, "GET", PATH, headers)
    if reply.status != 200 or reply.body != static:
        raise BenchError(
            f"{s.key} ({s.title}): GET {PATH} answered {reply.status} "
            f"with {len(reply.body)} bytes, not 200 with the static file"
        )


def measure(
    s: Scenario,
    wrk: str,
    settings: Settings,
    status_port: int,
    login_env: dict[str, str],
    round_no: int,
) -> None:
    url = f"http://{HOST}:{s.port}{'/_gateway/login' if s.login else PATH}"
    kwargs: dict = dict(headers=s.headers, timeout=settings.timeout)
    if s.login:
        kwargs.update(
            threads=1,
            connections=settings.login_connections,
            script=LOGIN_LUA,
            env=login_env,
            timeout=max(settings.timeout, 10),
        )
    else:
        kwargs.update(threads=settings.threads, connections=settings.connections)
    where = f" (round {round_no})" if settings.rounds > 1 else ""
    dead = exited(s.needs)
    if dead:
        s.problems.append(f"not run{where}: {dead}")
        log(f"{s.key:<3} not run: {dead}")
        return
    try:
        if settings.warmup:
            run_wrk(wrk, url, duration=settings.warmup, **kwargs)
        before = nginx_requests(status_port)
        r = run_wrk(wrk, url, duration=settings.duration, **kwargs)
        hits = nginx_requests(status_port) - before - 1  # minus the status request itself
    except (BenchError, OSError, ValueError, IndexError) as exc:
        detail = exited(s.needs) or str(exc).splitlines()[0]
        s.problems.append(f"failed{where}: {detail}")
        log(f"{s.key:<3} failed: {detail}")
        return
    s.runs.append(r)
    problems = []
    dead = exited(s.needs)
    if dead:
        problems.append(f"{dead} during the run")
    if r.non_2xx_3xx:
        problems.append(f"{r.non_2xx_3xx} non-2xx/3xx responses")
    if any(r.socket_errors.values()):
        detail = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v)
        problems.append(f"socket errors: {detail}")
    if s.login:
        ok, other = r.extra.get("LOGIN_303", 0), r.extra.get("LOGIN_OTHER", 0)
        if other:
            problems.append(f"{other} responses were not a 303 sign-in")
        if ok == 0:
            problems.append("no successful sign-in")
    else:
        s.upstream_hits += hits
        # Every answer must have come from the upstream: a gateway 302/401 never
        # reaches it. Requests still in flight when wrk stops may add a few hits.
        if hits < r.requests:
            problems.append(f"only {hits} of {r.requests} responses came from the upstream")
    s.problems += [p + where for p in problems]
    flag = f"  !! {'; '.join(problems)}" if problems else ""
    log(
        f"{s.key:<3} {r.rps:>10.1f} req/s  p50 {fmt_ms(r.p50_ms):>9}  "
        f"p99 {fmt_ms(r.p99_ms):>9}{where}{flag}"
    )


# -- CPU accounting ---------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(CPU time charged to processes, CPU time in interrupts/softirqs), all CPUs, in ticks.

    Interrupt and softirq time (on loopback: most of the TCP work) is not charged
    to any process here, so it is counted apart rather than as "other processes".
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system = fields[0], fields[1], fields[2]
    irq, softirq = (fields[5], fields[6]) if len(fields) > 6 else (0, 0)
    return user + nice + system, irq + softirq


def process_jiffies(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime


def our_jiffies(procs: Processes, work: Path) -> int:
    """CPU used by this run: us, wrk (a reaped child), what we started, our PostgreSQL."""
    pids = {os.getpid()}
    for proc in procs.procs:
        pids.update(descendants(proc.popen.pid))
    for entry in Path("/proc").iterdir():  # the embedded PostgreSQL daemonizes itself
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(work) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.update(descendants(int(entry.name)))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = sum(process_jiffies(pid) for pid in pids if pid != os.getpid())
    me = resource.getrusage(resource.RUSAGE_SELF)
    return own + round((children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime) * HZ)


@dataclass
class CpuSnapshot:
    at: float
    processes: int
    interrupts: int
    ours: int

    @classmethod
    def take(cls, procs: Processes, work: Path) -> CpuSnapshot:
        processes, interrupts = machine_jiffies()
        return cls(time.monotonic(), processes, interrupts, our_jiffies(procs, work))

    def shares(self, later: CpuSnapshot) -> tuple[float, float, float]:
        """Shares of all CPU time in between: (this benchmark's processes,
        interrupts/softirqs, other processes)."""
        capacity = (later.at - self.at) * HZ * (os.cpu_count() or 1)
        if capacity <= 0:
            return 0.0, 0.0, 0.0
        ours = (later.ours - self.ours) / capacity
        kernel = (later.interrupts - self.interrupts) / capacity
        others = (later.processes - self.processes) / capacity - ours
        return ours, kernel, max(0.0, others)


# -- report -----------------------------------------------------------------------


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Ratio:
    name: str
    value: str  # as shown
    target: str  # "" for information only
    met: bool | None = None
    valid: bool = True  # False when a scenario behind it had errors

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        if not self.valid:
            return "**invalid** (errors in the run)"
        return "yes" if self.met else "**NO**"

    @property
    def failed(self) -> bool:
        return bool(self.target) and (not self.valid or not self.met)


def plural(w: int) -> str:
    return f"{w} worker{'s' if w > 1 else ''}"


def ratios(by_key: dict[str, Scenario], n: int, uvloop: tuple[bool, bool]) -> list[Ratio]:
    out: list[Ratio] = []

    def figure(key: str, what: str) -> float | None:
        s = by_key.get(key)
        r = s.result if s else None
        return getattr(r, what) if r else None

    def add(name, what, top, bottom, target="", minimum=None, maximum=None):
        a, b = figure(top, what), figure(bottom, what)
        value = a / b if a is not None and b else None
        met = value is not None
        if met and minimum is not None:
            met = value >= minimum
        if met and maximum is not None:
            met = value <= maximum
        valid = all(by_key[k].ok for k in (top, bottom) if k in by_key)
        text = "n/a" if value is None else f"{value:.2f}"
        out.append(Ratio(name, text, target, met, valid))

    workers = [1] if n == 1 else [1, n]
    for w in workers:
        add(f"c/f req/s, {plural(w)}", "rps", f"c{w}", f"f{w}", "≥ 0.90", minimum=0.9)
        add(f"p99(c)/p99(f), {plural(w)}", "p99_ms", f"c{w}", f"f{w}", "≤ 1.20", maximum=1.2)
    add(f"d/b req/s, gateway {plural(n)}", "rps", f"d{n}", "b", "≥ 0.50", minimum=0.5)
    if n > 1:
        add("d/b req/s, gateway 1 worker", "rps", "d1", "b")
    for w in workers:
        add(f"d/g req/s, {plural(w)}", "rps", f"d{w}", f"g{w}")
    for w in workers:
        add(f"g/b req/s, {plural(w)}", "rps", f"g{w}", "b")
    for w in workers:
        add(f"c/b req/s, {plural(w)}", "rps", f"c{w}", "b")
    for w in workers:
        add(f"f/b req/s (floor vs nginx), {plural(w)}", "rps", f"f{w}", "b")
    if n > 1:
        add(f"c{n}/c1 req/s (worker scaling)", "rps", f"c{n}", "c1")
        add(f"f{n}/f1 req/s (worker scaling)", "rps", f"f{n}", "f1")
    installed, used = uvloop
    out.append(
        Ratio(
            "uvloop in every gateway worker",
            "yes" if used else "no" if installed else "not installed",
            "used when installed",
            used or not installed,
        )
    )
    return out


def write_results(
    path: Path,
    *,
    started: datetime.datetime,
    elapsed: float,
    machine: list[str],
    settings: Settings,
    scenarios: list[Scenario],
    table: list[Ratio],
    notes: list[str],
) -> None:
    rounds = settings.rounds
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py` on {started:%Y-%m-%d %H:%M} UTC "
        f"(the whole run took {elapsed:.0f} s).",
        "Absolute numbers mean little (wrk and every server share the same cores);",
        "compare the **ratios** within this one run. See bench/README.md.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in machine],
        "",
        "## Scenarios",
        "",
        f"- Load: {settings.describe()}.",
        f"- All on {HOST}; `GET {PATH}`, a {STATIC_BYTES}-byte static file.",
        f"- Login (e): `wrk -t1 -c{settings.login_connections}` with bench/login.lua, "
        "same duration, one round; only 303 sign-ins count as success.",
        "- errors: non-2xx/3xx answers, socket errors, and answers that did not come from "
        "the upstream (checked with the upstream's stub_status counter).",
    ]
    if rounds > 1:
        lines.append(f"- {rounds} rounds (order reversed every other round); figures are medians.")
    spread = " req/s range |" if rounds > 1 else ""
    lines += [
        "",
        f"| | scenario | req/s |{spread} p50 | p99 | errors |",
        "|---|---|---:|" + ("---:|" if rounds > 1 else "") + "---:|---:|---|",
    ]
    for s in scenarios:
        r = s.result
        if r is None:
            why = "**" + "; ".join(s.problems or ["not run"]) + "**"
            lines.append(
                f"| {s.key} | {s.title} | — |{' — |' if rounds > 1 else ''} — | — | {why} |"
            )
            continue
        errors = "**" + "; ".join(s.problems) + "**" if s.problems else "0"
        rps = f"{r.rps:,.1f}" if s.login else f"{r.rps:,.0f}"
        if s.login:
            rps += f" ({r.extra.get('LOGIN_303', 0)} sign-ins)"
        cells = [s.key, s.title, rps]
        if rounds > 1:
            values = [x.rps for x in s.runs]
            cells.append(f"{min(values):,.0f}–{max(values):,.0f}" if len(values) > 1 else "")
        cells += [fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), errors]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Ratios and targets",
        "",
        "| ratio | value | target | met |",
        "|---|---:|---|---|",
    ]
    for ratio in table:
        target = ratio.target or "(information)"
        lines.append(f"| {ratio.name} | {ratio.value} | {target} | {ratio.verdict} |")
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    # The hand-kept record of what was profiled and changed survives every re-run.
    if PROFILE.exists():
        lines += ["", PROFILE.read_text("utf-8").strip()]
    lines += ["", "## Raw wrk output", ""]
    for s in scenarios:
        if s.result:
            lines += [
                f"<details><summary>{s.key}: {s.title}</summary>",
                "",
                "```",
                s.result.raw.rstrip(),
                "```",
                "",
                "</details>",
                "",
            ]
    path.write_text("\n".join(lines).rstrip() + "\n")


# -- main -------------------------------------------------------------------------


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def database(work: Path) -> Iterator[tuple[str, bool]]:
    url = os.environ.get("GATEWAY_DATABASE_URL")
    if url:
        yield url, True
        return
    from gateway.store.db import embedded_postgres

    log("starting embedded PostgreSQL")
    with embedded_postgres(work / "db") as embedded_url:
        yield embedded_url, False


@dataclass
class Server:
    port: int
    proc: Proc
    pids: list[int]  # the processes listening (the workers)
    uvloop: int  # how many of them loaded uvloop


def start_python_server(
    procs: Processes, name: str, argv: list[str], port: int, workers: int
) -> Server:
    proc = procs.start(name, argv, env=clean_env())
    wait_listening(proc, port, workers=workers)
    pids = listening_pids(proc, port)
    loops = sum(uses_uvloop(pid) for pid in pids)
    log(f"{name} on :{port} ({len(pids)} listening, uvloop in {loops})")
    return Server(port, proc, pids, loops)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gateway load benchmark: every scenario in one run, into bench/RESULTS.md."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="warm-up seconds before each run (default 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every scenario R times, report medians"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="N for the multi-worker runs (default: os.cpu_count())",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="default: bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)
    if not (
        1 <= args.workers <= 256
        and 1 <= args.duration <= 300
        and 0 <= args.warmup <= 60
        and 1 <= args.rounds <= 10
        and 1 <= args.threads <= args.connections <= 10000
    ):
        parser.error("out of range: --workers/--duration/--warmup/--rounds/--threads/--connections")
    return args


def run(args: argparse.Namespace, work: Path, procs: Processes, stack: contextlib.ExitStack):
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    n = args.workers
    counts = [1] if n == 1 else [1, n]
    settings = Settings(
        args.threads,
        args.connections,
        args.duration,
        args.warmup,
        login_connections=max(2, 2 * n),
        rounds=args.rounds,
    )
    nginx, wrk = ensure_tools()
    log(f"work dir {work}")

    # 1. the static upstream
    www = work / "www"
    www.mkdir()
    static = (b"<!doctype html><title>bench</title><p>" + b"x" * STATIC_BYTES)[
        : STATIC_BYTES - 1
    ] + b"\n"
    (www / "index.html").write_bytes(static)
    up = free_port()
    static_nginx = start_nginx(procs, nginx, work, "nginx-static", static_site(up, www), up, n)

    # 2. the database and the bench user; stopping runs in reverse:
    #    processes, then the user (external database only), then the database
    username = f"bench-{secrets.token_hex(4)}"
    db_url, external_db = stack.enter_context(database(work))
    try:
        asyncio.run(_create_user(db_url, username))
    except Exception as exc:  # DatabaseUnavailable, asyncpg errors, a bad URL
        where = "GATEWAY_DATABASE_URL" if external_db else "embedded PostgreSQL"
        raise BenchError(f"database ({where}): {exc}") from None
    if external_db:

        def delete_user() -> None:
            try:
                asyncio.run(_delete_user(db_url, username))
            except Exception as exc:
                log(f"could not delete the bench user {username}: {exc}")

        stack.callback(delete_user)
    stack.callback(procs.stop_all)

    # 3. the gateways (1 and N workers), the nginx in front, the bare proxies,
    #    and the example nginx once more with the bare proxy as its "gateway"
    gateways: dict[int, Server] = {}
    for w in counts:
        port = free_port()
        cfg = work / f"gateway-{w}.toml"
        gateway_config(cfg, port, db_url, up)
        argv = [sys.executable, "-m", "gateway", "serve", "-c", str(cfg), "--workers", str(w)]
        gateways[w] = start_python_server(procs, f"gateway-{w}", argv, port, w)
    b_port = free_port()
    proxy_nginx = start_nginx(
        procs, nginx, work, "nginx-proxy", proxy_pass_site(b_port, up), b_port, n
    )
    auth_ports, auth_nginx = {}, {}
    for w in counts:
        auth_ports[w] = port = free_port()
        site = render_example(port, gateways[w].port, up)
        auth_nginx[w] = start_nginx(procs, nginx, work, f"nginx-auth-{w}", site, port, n)
    bare: dict[int, Server] = {}
    for w in counts:
        port = free_port()
        argv = [sys.executable, str(BARE_PROXY), "--listen", f"{HOST}:{port}"]
        argv += ["--upstream", f"http://{HOST}:{up}", "--workers", str(w)]
        bare[w] = start_python_server(procs, f"bare-proxy-{w}", argv, port, w)
    floor_ports, floor_nginx = {}, {}
    for w in counts:
        # The same rendering as (d): only the gateway address differs, so d/g is
        # the cost of the gateway's /auth over a bare 200 (bare_proxy.py's AUTH_PATH).
        floor_ports[w] = port = free_port()
        site = render_example(port, bare[w].port, up)
        floor_nginx[w] = start_nginx(procs, nginx, work, f"nginx-auth-floor-{w}", site, port, n)

    # 4. a session through each gateway; the login form's CSRF pair for (e)
    signed_in = {}
    for w, g in gateways.items():
        try:
            signed_in[w] = sign_in(g.port, username)
        except BenchError as exc:
            status = exited([g.proc]) or f"{g.proc.name} still running"
            raise BenchError(f"signing in: {exc} ({status})\n{g.proc.tail()}") from None
    _, nonce, token = signed_in[n]
    login_env = dict(
        os.environ,
        BENCH_LOGIN_BODY=urlencode(
            {"csrf_token": token, "rd": "/", "username": username, "password": PASSWORD}
        ),
        BENCH_LOGIN_COOKIE=f"{CSRF_COOKIE}={nonce}",
    )

    def cookie(w: int) -> list[str]:
        return [f"Cookie: {SESSION_COOKIE}={signed_in[w][0]}"]

    scenarios = [
        Scenario("a", "direct to the static upstream (nginx)", up, needs=[static_nginx]),
        Scenario(
            "b",
            "nginx `proxy_pass` to the upstream",
            b_port,
            needs=[static_nginx, proxy_nginx],
        ),
    ]
    for w in counts:
        title = f"bare aiohttp proxy (floor), {plural(w)}"
        needs = [static_nginx, bare[w].proc]
        scenarios.append(Scenario(f"f{w}", title, bare[w].port, needs=needs))
        title = f"gateway, signed in, {plural(w)}"
        needs = [static_nginx, gateways[w].proc]
        scenarios.append(Scenario(f"c{w}", title, gateways[w].port, cookie(w), needs=needs))
    for w in counts:
        # The same Cookie header as (d): the example's maps strip it in both, so
        # nginx does the same work and only the auth answer differs.
        title = f"nginx `auth_request` → bare aiohttp endpoint (floor), {plural(w)}"
        needs = [static_nginx, floor_nginx[w], bare[w].proc]
        scenarios.append(Scenario(f"g{w}", title, floor_ports[w], cookie(w), needs=needs))
        title = f"nginx `auth_request` → gateway /auth ({plural(w)}) → upstream"
        needs = [static_nginx, auth_nginx[w], gateways[w].proc]
        scenarios.append(Scenario(f"d{w}", title, auth_ports[w], cookie(w), needs=needs))
    login = Scenario(
        "e",
        f"gateway sign-in POST (Argon2), {plural(n)}",
        gateways[n].port,
        login=True,
        needs=[gateways[n].proc],
    )
    for s in scenarios:
        preflight(s, static)

    # 5. the load
    per_run = args.duration + args.warmup
    total = (len(scenarios) * args.rounds + 1) * per_run
    log(f"{len(scenarios) + 1} scenarios, {args.rounds} round(s): about {total} s of load")
    before = CpuSnapshot.take(procs, work)
    for round_no in range(1, args.rounds + 1):
        order = scenarios if round_no % 2 else scenarios[::-1]
        for s in order:
            measure(s, wrk, settings, up, login_env, round_no)
    measure(login, wrk, settings, up, login_env, 1)
    after = CpuSnapshot.take(procs, work)
    scenarios.append(login)

    notes = []
    for proc in procs.procs:
        if proc.popen.poll() is not None:
            last = proc.tail(3).replace("\n", " / ")
            notes.append(
                f"{proc.name} exited during the run (status {proc.popen.returncode}); "
                f"the end of its log: {last or '(empty)'}"
            )
    # Still signed in after all that load (nothing logged anyone out)?
    try:
        preflight(Scenario("c", "gateway after the run", gateways[n].port, cookie(n)), static)
    except BenchError as exc:
        notes.append(f"after the run the session no longer worked: {exc}")
    ours, kernel, foreign = before.shares(after)
    cpu_line = (
        f"{ours:.0%} this benchmark's processes (wrk, servers, database), "
        f"{kernel:.0%} interrupts/softirqs (loopback TCP), {foreign:.0%} other processes"
    )
    log(f"CPU time during the load: {cpu_line}")
    uvloop_installed = package_version("uvloop") is not None
    uvloop_used = all(g.uvloop == len(g.pids) == w for w, g in gateways.items())
    bare_uvloop = ", ".join(f"{b.uvloop}/{len(b.pids)}" for b in bare.values())
    machine = [
        f"CPUs: {os.cpu_count()} (usable here: {len(os.sched_getaffinity(0))}); N = {n} workers",
        f"CPU model: {cpu_model()}",
        f"Kernel: {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, aiohttp {package_version('aiohttp')}, "
        f"uvloop {package_version('uvloop') or 'not installed'}",
        "uvloop loaded in the listening processes: gateway "
        + ", ".join(f"{g.uvloop}/{len(g.pids)}" for g in gateways.values())
        + f"; bare proxy {bare_uvloop}",
        f"{tool_version([nginx, '-v'])}; {tool_version([wrk, '-v'])}",
        "Database: "
        + ("GATEWAY_DATABASE_URL" if external_db else "embedded PostgreSQL in a temp dir"),
        f"Share of all CPU time during the load: {cpu_line}",
    ]
    if foreign > 0.10:
        notes.append(
            f"the machine was not idle: other processes used {foreign:.0%} of all CPU time "
            "during the load, so these numbers are noisier than usual; run again on a quiet "
            "machine (or with --rounds 3) before drawing conclusions"
        )
    for s in scenarios:
        if s.problems:
            notes.append(f"scenario {s.key} had errors: {'; '.join(s.problems)}")
    if n == 1:
        notes.append("one CPU: the N-worker scenarios are the 1-worker ones")
    notes.append(
        "every nginx runs worker_processes = N; (b) uses the same upstream pool "
        "(`keepalive 16`) and proxy headers as examples/nginx/gateway.conf, which (d) and (g) "
        "run unchanged but for its three addresses ((g): bench/bare_proxy.py as the gateway)"
    )
    table = ratios({s.key: s for s in scenarios}, n, (uvloop_installed, uvloop_used))
    write_results(
        args.output,
        started=started,
        elapsed=time.monotonic() - t0,
        machine=machine,
        settings=settings,
        scenarios=scenarios,
        table=table,
        notes=notes,
    )
    log(f"wrote {args.output}")
    for r in table:
        log(f"{r.name:<40} {r.value:>6}  {r.target or '(information)':<20} {r.verdict}")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    procs = Processes(work)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(procs.stop_all)  # whatever starts before the database
            table = run(args, work, procs, stack)
        unmet = [r.name for r in table if r.failed]
        log(f"done in {time.monotonic() - t0:.0f} s")
        if unmet:
            log("targets not met: " + "; ".join(unmet))
        return 1 if args.check and unmet else 0
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
