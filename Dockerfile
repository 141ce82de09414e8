# syntax=docker/dockerfile:1
#
# Gateway as a sidecar image.
#
#   docker build -t gateway .
#   docker run -e GATEWAY_DATABASE_URL=postgresql://user:pass@db/gateway \
#              -e GATEWAY_UPSTREAM_URL=http://app:80 -p 8080:8080 gateway
#
# It expects a real PostgreSQL (GATEWAY_DATABASE_URL): the embedded one, the
# `gateway[embedded]` extra, is deliberately not installed. Configuration comes
# from GATEWAY_* variables and/or a file mounted at /etc/gateway/config.toml
# (the working directory, so `gateway serve` and `docker exec ... gateway user
# add` read it without -c). See examples/docker-compose/.

# -- build: the gateway wheel plus a wheel of every dependency -------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# Only what the wheel is built from; .dockerignore keeps the context this small too.
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY templates templates
COPY sql sql
COPY data data
RUN pip wheel --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --wheel-dir /wheels .

# -- runtime: the installed wheels, no build tools, no pip cache, no root --------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Reverse-proxy authentication gateway with server-side sessions in PostgreSQL"

# The wheels are bind-mounted from the build stage, not copied, so they never
# become a layer of this image. --no-index: nothing is fetched at this point;
# everything installed was resolved and built in the build stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-index --find-links=/wheels \
        /wheels/gateway-*.whl \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin gateway

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_LISTEN=0.0.0.0:8080

# Owned by root and read-only to the gateway user: mount config.toml here.
WORKDIR /etc/gateway
USER 10001:10001
EXPOSE 8080

# No curl in the slim image: Python's urllib asks {prefix}/healthz on the port
# the gateway really listens on, both read from the same config as `serve`
# (GATEWAY_LISTEN, GATEWAY_CONFIG or ./config.toml), so a changed prefix or port
# does not leave the container "unhealthy".
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; from gateway.config import load_config; s = load_config().server; h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(s.host, s.host); h = f'[{h}]' if ':' in h else h; urllib.request.urlopen(f'http://{h}:{s.port}{s.prefix}/healthz', timeout=4)"]

ENTRYPOINT ["gateway"]
CMD ["serve"]
