"""create_app(config): the app's state, resources, routes and signals. Wiring only."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .config import Config
from .policy.cookies import cookie_names
from .policy.identity import Clock, utc_now
from .policy.peers import trusted_peer_check
from .policy.rules import RuleSet
from .policy.upstreams import UpstreamTable
from .resources import favicon_uri, password_rules, resource_dir
from .store.throttle import Throttle
from .web import (
    account,
    branding,
    database,
    errors,
    forward_auth,
    health,
    login,
    metrics,
    proxy,
    response_hook,
    upstream_client,
    websocket,
)
from .web.exchange import CLOCK, CONFIG, COOKIE_NAMES, RULES, TRUSTED_PEER
from .web.headers import HEADER_RULES, HeaderRules

# Only the gateway's own forms are read into memory; proxied bodies stream.
MAX_FORM_BYTES = 64 * 1024


def create_app(config: Config, *, clock: Clock = utc_now) -> web.Application:
    app = web.Application(client_max_size=MAX_FORM_BYTES)
    app[CONFIG] = config
    app[CLOCK] = clock
    app[COOKIE_NAMES] = cookie_names(config)
    app[TRUSTED_PEER] = trusted_peer_check(config.server.trusted_proxies)
    app[RULES] = RuleSet(config.rules)
    app[proxy.UPSTREAMS] = UpstreamTable(config.upstreams)
    app[HEADER_RULES] = HeaderRules(config)
    app[websocket.WEBSOCKET_SLOTS] = websocket.WebSocketSlots()
    app[login.THROTTLE] = Throttle(config.login, clock)
    app[account.PASSWORD_RULES] = password_rules(config)
    app[branding.ASSETS] = branding.assets(config.branding)
    app.cleanup_ctx.extend(
        [
            database.database,
            database.session_listener,
            upstream_client.http_client,
            login.passwords,
            metrics.sampler,
            database.purger,
        ]
    )

    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_dir("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    prefix = config.server.prefix
    env.globals.update(
        prefix=prefix,
        css_url=f"{prefix}/static/gateway.css",
        favicon=favicon_uri(),
        **branding.template_globals(config.branding, prefix),
    )
    env.filters.update(when=account.format_time, ago=account.format_ago)

    r = app.router
    # Every route answers Expect itself (errors.expect_continue): aiohttp's
    # default turned a non-UTF-8 value into a 500. Route names double as the
    # metrics' route classes.
    expect = {"expect_handler": errors.expect_continue}
    r.add_get(f"{prefix}/login", login.login_get, name="login", **expect)
    r.add_post(f"{prefix}/login", login.login_post, name="login_post", **expect)
    r.add_get(f"{prefix}/logout", login.logout_get, name="logout", **expect)
    r.add_post(f"{prefix}/logout", login.logout_post, name="logout_post", **expect)
    r.add_get(f"{prefix}/auth", forward_auth.handle_auth, name="auth", **expect)
    r.add_get(f"{prefix}/account", account.account_get, name="account", **expect)
    r.add_get(f"{prefix}/sessions", account.sessions_get, name="sessions", **expect)
    r.add_post(f"{prefix}/sessions", account.sessions_post, name="sessions_post", **expect)
    r.add_get(f"{prefix}/password", account.password_get, name="password", **expect)
    r.add_post(f"{prefix}/password", account.password_post, name="password_post", **expect)
    r.add_get(f"{prefix}/userinfo", account.userinfo, name="userinfo", **expect)
    r.add_get(f"{prefix}/branding.css", branding.stylesheet, name="branding_css", **expect)
    r.add_get(f"{prefix}/branding/logo", branding.logo, name="branding_logo", **expect)
    r.add_get(f"{prefix}/healthz", health.healthz, name="healthz", **expect)
    r.add_get(f"{prefix}/readyz", health.readyz, name="readyz", **expect)
    r.add_get(f"{prefix}/metrics", metrics.metrics, name="metrics", **expect)
    r.add_static(f"{prefix}/static", resource_dir("templates") / "static", name="static", **expect)
    r.add_route("*", prefix, errors.not_found, name="gateway_not_found", **expect)
    # [\s\S], not ".": a path with an encoded newline must reach a handler that refuses it.
    r.add_route("*", prefix + r"/{tail:[\s\S]*}", errors.not_found, name="gateway_other", **expect)
    # Everything else: the catch-all means no request meets aiohttp's own 404/405 route.
    r.add_route("*", r"/{tail:[\s\S]*}", proxy.handle, name="proxy", **expect)

    app.on_response_prepare.append(response_hook.before_headers)
    return app
