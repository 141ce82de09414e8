"""`gateway demo` as a user runs it: a subprocess, a browser-like client, real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
from conftest import free_port

from gateway.csrf import FIELD


async def test_demo_serves_the_whole_flow(tmp_path: Path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path / "demo-data"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        output = ""
        async with asyncio.timeout(60):
            while "password" not in output or "Ctrl+C" not in output:
                line = await proc.stdout.readline()
                assert line, f"demo exited early:\n{output}"
                output += line.decode()
        password = re.search(r"password\s+(\S+)", output).group(1)
        base = f"http://127.0.0.1:{port}"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            first = await http.get(
                f"{base}/", headers={"Accept": "text/html"}, allow_redirects=False
            )
            assert first.status == 302
            form_page = await (await http.get(f"{base}/_gateway/login?rd=/")).text()
            token = re.search(r'name="csrf_token" value="([^"]+)"', form_page).group(1)
            login = await http.post(
                f"{base}/_gateway/login",
                data={FIELD: token, "username": "demo", "password": password, "rd": "/"},
                allow_redirects=False,
            )
            assert login.status == 303
            app = await http.get(f"{base}/", headers={"Accept": "text/html"})
            page = await app.text()
            assert app.status == 200
            assert "demo" in page and "X-Remote-User" in page
        async with aiohttp.ClientSession() as anonymous_browser:
            public = await anonymous_browser.get(f"{base}/public/", headers={"Accept": "text/html"})
            assert public.status == 200
            assert "No identity headers arrived" in await public.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    # The embedded PostgreSQL stopped with the demo: its pid file is gone.
    assert not (tmp_path / "demo-data" / "pgdata" / "postmaster.pid").exists()
