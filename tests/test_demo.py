"""`gateway demo` as a person runs it: a subprocess, then Chromium at the printed address."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from chromium import app_saw, click_and_wait, sign_in
from helpers import free_port


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    output: str

    @property
    def password(self) -> str:
        return re.search(r"password\s+(\S+)", self.output).group(1)

    @property
    def url(self) -> str:
        return re.search(r"open\s+(\S+)/", self.output).group(1)


def _start(port: int, data_dir: Path):
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@asynccontextmanager
async def demo(port: int, data_dir: Path) -> AsyncIterator[Demo]:
    proc = await _start(port, data_dir)
    try:
        output = ""
        async with asyncio.timeout(60):
            while "password" not in output or "Ctrl+C" not in output:
                line = await proc.stdout.readline()
                assert line, f"demo exited early:\n{output}{(await proc.stderr.read()).decode()}"
                output += line.decode()
        yield Demo(proc, output)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_demo_serves_the_whole_flow_in_a_browser(tmp_path: Path, new_context):
    port = free_port()
    async with demo(port, tmp_path / "demo-data") as running:
        assert running.url == f"http://localhost:{port}"
        page = await (await new_context()).new_page()
        await page.goto(f"{running.url}/")
        assert await page.get_by_role("heading", level=1).inner_text() == "Sign in"
        await sign_in(page, "demo", running.password)
        assert page.url == f"{running.url}/"
        assert "The gateway says you are demo." in await page.locator("main").inner_text()
        assert (await app_saw(page))["x-remote-user"] == ["demo"]
        await click_and_wait(page, page.get_by_role("link", name="Sign out"))
        await click_and_wait(page, page.get_by_role("button", name="Sign out", exact=True))
        assert await page.get_by_role("heading", level=1).inner_text() == "You have been signed out"

        visitor = await (await new_context()).new_page()
        await visitor.goto(f"{running.url}/public/")
        text = await visitor.locator("main").inner_text()
        assert "You are not signed in." in text
        assert await visitor.get_by_role("link", name="Sign out").count() == 0
        assert await visitor.get_by_role("link", name="Sign in").count() == 1
    assert running.proc.returncode == 0
    # The embedded PostgreSQL stopped with the demo: its pid file is gone.
    assert not (tmp_path / "demo-data" / "pgdata" / "postmaster.pid").exists()


async def test_a_second_demo_on_a_taken_port_fails_and_leaves_the_first_alone(
    tmp_path: Path, new_context
):
    port = free_port()
    async with demo(port, tmp_path / "demo-data") as first:
        second = await _start(port, tmp_path / "demo-data")
        async with asyncio.timeout(60):
            out, err = await second.communicate()
        assert second.returncode == 1
        assert out == b""
        assert err.decode() == (
            f"gateway: demo: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        )
        # The first demo's printed password still works: nobody reset it.
        page = await (await new_context()).new_page()
        await page.goto(f"{first.url}/_gateway/login")
        assert (await sign_in(page, "demo", first.password)).status == 200
        assert "The gateway says you are demo." in await page.locator("main").inner_text()


async def test_a_second_demo_on_the_same_data_directory_leaves_the_first_alone(
    tmp_path: Path, new_context
):
    """Another port, the same database: its new password would replace the first one's."""
    async with demo(free_port(), tmp_path / "demo-data") as first:
        second = await _start(free_port(), tmp_path / "demo-data")
        async with asyncio.timeout(60):
            out, err = await second.communicate()
        assert second.returncode == 1
        assert out == b""
        assert err.decode() == (
            "gateway: demo: another gateway demo is running with data directory "
            f"{(tmp_path / 'demo-data').resolve()}\n"
        )
        page = await (await new_context()).new_page()
        await page.goto(f"{first.url}/_gateway/login")
        assert (await sign_in(page, "demo", first.password)).status == 200
