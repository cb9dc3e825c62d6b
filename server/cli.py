"""The one `nameplate` command: serve, demo, migrate, site, agent."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from nameplate.config import Settings
from nameplate.protocol.vocabulary import ErrorCode

if TYPE_CHECKING:
    from nameplate.demo.seed import DemoAgent
    from nameplate.services import Services
    from nameplate.store.models import Agent, Site

T = TypeVar("T")


def run_server(settings: Settings, host: str, port: int, server_log_level: str | None = None) -> None:
    import uvicorn

    from nameplate.app import create_app
    from nameplate.protocol.inbound import WS_MAX_SIZE
    from nameplate.realtime.lean_protocol import LeanWebSocketProtocol

    uvicorn.run(
        create_app(settings, tune_process=True),
        host=host,
        port=port,
        # Per-message deflate costs ~300 KiB a socket for a few bytes saved on short chat frames.
        ws_per_message_deflate=False,
        ws=LeanWebSocketProtocol,
        # Pings every 20 s find dead peers (phones that walked out of Wi-Fi) within a minute.
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        # A frame larger than the protocol accepts is refused (1009) as it arrives, not read whole first
        # (uvicorn's default would buffer 16 MiB per socket before hello).
        ws_max_size=WS_MAX_SIZE,
        proxy_headers=True,
        # The proxies whose X-Forwarded-For is believed: without it every agent behind a proxy shares the
        # proxy's address, for the log-in throttle and the token limit alike (see README).
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level=server_log_level or settings.log_level,
    )


async def _with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    from nameplate.services import Services
    from nameplate.store.migrate import SchemaOutOfDate, prepare_schema

    services = Services.build(settings)
    try:
        # As at start-up: SQLite migrates itself, PostgreSQL must already be at head (`nameplate migrate`).
        await prepare_schema(services.engine)
        return await work(services)
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        await services.engine.dispose()


def cmd_serve(args: argparse.Namespace) -> None:
    run_server(Settings.from_env(), args.host, args.port)


def cmd_demo(args: argparse.Namespace) -> None:
    from nameplate.demo.seed import DEMO_SITE_KEY, seed_demo

    database = Path(args.database).resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    env = dict(os.environ)
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{database}"
    env.pop("REDIS_URL", None)
    base = f"http://{args.host}:{args.port}"
    # Links in mails (the rating form, the conversation) point back at this demo server.
    env.setdefault("PUBLIC_URL", base)
    settings = Settings.from_env(env)
    if not args.verbose and not env.get("LOG_LEVEL"):
        settings = replace(settings, log_level="warning")
    origins = f"{base} http://localhost:{args.port} http://127.0.0.1:{args.port}"

    async def seed(services: Services) -> tuple[list[DemoAgent], str]:
        people = await seed_demo(services, origins, showcase=True)
        site = await services.directory.site_by_key(DEMO_SITE_KEY)
        assert site is not None
        return people, site.secret

    people, identity_secret = asyncio.run(_with_services(settings, seed))
    print(demo_banner(str(database), base, people, identity_secret, mail_sent=bool(settings.smtp_url)), flush=True)
    # uvicorn's few lines stay: they say the server is up and where.
    run_server(settings, args.host, args.port, server_log_level="info")


def demo_banner(
    database: str, base: str, people: list[DemoAgent], identity_secret: str, mail_sent: bool = False
) -> str:
    """What `nameplate demo` prints before it serves: where to look, who to log in as, how to identify."""
    from nameplate.demo.seed import DEMO_PASSWORD, DEMO_SITE_KEY

    width = max(len(f"{p.given_name} {p.family_name}") for p in people)
    role_width = max(len(str(p.role)) for p in people)
    email_width = max(len(p.email) for p in people)
    lines = [
        "",
        f"Nameplate demo — database {database}",
        "",
        f"  Shop page (visitor):   {base}/demo",
        f"  Signed-in customer:    {base}/demo/signed-in   (Sam Rivera, verified, chatted with Jane before)",
        f"  Agent console:         {base}/login",
        f"  Site key:              {DEMO_SITE_KEY}",
        f"  Identity secret:       {identity_secret}",
        # Without SMTP_URL every mail the product would send is kept in the store, read on this page.
        f"  E-mail log:            {base}/console/mail  (sent through SMTP_URL)"
        if mail_sent
        else f"  E-mail (dev outbox):   {base}/console/mail  (no SMTP_URL: every mail is kept there, not sent)",
        "",
        "  Log in as (e-mail / password):",
    ]
    for p in people:
        name = f"{p.given_name} {p.family_name}"
        lines.append(f"    {name:<{width}}  {str(p.role):<{role_width}}  {p.email:<{email_width}} / {DEMO_PASSWORD}")
    lines += [
        "",
        "  Try Nameplate.identify: user_hash = HMAC-SHA256(identity secret, user_id), hex, e.g.",
        f"    python3 -c \"import hmac,hashlib; print(hmac.new(b'{identity_secret}', b'u_1142', "
        'hashlib.sha256).hexdigest())"',
        "",
    ]
    return "\n".join(lines)


def cmd_migrate(_args: argparse.Namespace) -> None:
    from nameplate.store.migrate import SchemaOutOfDate, upgrade_to_head_sync

    try:
        revision = upgrade_to_head_sync(Settings.from_env().database_url)
    except SchemaOutOfDate as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"schema is up to date: revision {revision}")


def cmd_site_create(args: argparse.Namespace) -> None:
    settings = Settings.from_env()

    async def work(services: Services) -> Site:
        return await services.directory.create_site(args.name, allowed_origins=" ".join(args.origin or []))

    site = asyncio.run(_with_services(settings, work))
    print(f"site created: {site.name}")
    print(f"  public key (for the widget tag): {site.public_key}")
    print(f"  identity secret (keep private):  {site.secret}")


def cmd_agent_create(args: argparse.Namespace) -> None:
    from nameplate.errors import NameplateError
    from nameplate.people.photos import store_photo

    settings = Settings.from_env()
    password = os.environ.get("NAMEPLATE_AGENT_PASSWORD") or getpass.getpass("Password for the new agent: ")
    photo = Path(args.photo).read_bytes() if args.photo else None

    async def work(services: Services) -> Agent:
        site = await services.directory.site_by_key(args.site)
        if site is None:
            raise NameplateError(ErrorCode.not_found, f"no site with key {args.site!r}")
        agent = await services.directory.create_agent(
            site.id,
            given_name=args.given_name,
            family_name=args.family_name,
            email=args.email,
            password=password,
            title=args.title,
            intro=args.intro,
            role=args.role,
            capacity=args.capacity,
        )
        if photo is not None:
            await store_photo(services.sessions, agent.id, photo)
        return agent

    try:
        agent = asyncio.run(_with_services(settings, work))
    except (NameplateError, ValueError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        sys.exit(2)
    print(f"agent created: {agent.full_name} <{agent.email}> ({agent.role})")


def cmd_apikey(args: argparse.Namespace) -> None:
    settings = Settings.from_env()

    async def work(services: Services) -> str:
        site = await services.directory.site_by_key(args.site)
        if site is None:
            raise SystemExit(f"error: no site with key {args.site!r}")
        if args.action == "create":
            record, key = await services.api_keys.create(site.id, args.name)
            return f"API key {record.name!r} (id {record.id}) — shown once, keep it secret:\n{key}"
        if args.action == "revoke":
            await services.api_keys.revoke(site.id, args.id)
            return f"revoked {args.id}"
        rows = await services.api_keys.list(site.id)
        return (
            "\n".join(f"{k.id}  {k.prefix}…  {k.name}  {'revoked' if k.revoked_at else 'active'}" for k in rows)
            or "no keys"
        )

    print(asyncio.run(_with_services(settings, work)))


def cmd_export(args: argparse.Namespace) -> None:
    """Stream a date range of messages as CSV or JSON to stdout (or --output), the same rows the
    supervisor desk downloads, without loading the range into memory."""
    from nameplate.desk.transcripts import Transcripts, csv_chunks, json_chunks, parse_day

    settings = Settings.from_env()

    async def work(services: Services) -> None:
        site = await services.directory.site_by_key(args.site)
        if site is None:
            raise SystemExit(f"error: no site with key {args.site!r}")
        first, last = parse_day(args.date_from, "from"), parse_day(args.date_to, "to")
        if first is None or last is None:
            raise SystemExit("error: --from and --to are dates, YYYY-MM-DD")
        batches = Transcripts(services.sessions).stream_lines(site.id, first, last)
        chunks = (
            csv_chunks(batches)
            if args.format == "csv"
            else json_chunks(batches, {"site": site.public_key, "from": args.date_from, "to": args.date_to})
        )
        # A command-line tool writing its own output file: blocking writes are what we want here.
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115, ASYNC230
        try:
            async for chunk in chunks:
                out.write(chunk)
        finally:
            if args.output:
                out.close()

    asyncio.run(_with_services(settings, work))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nameplate", description="Live chat with real, named people.")
    parser.add_argument("--verbose", action="store_true", help="log more (migrations, routing); or set LOG_LEVEL")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="fresh demo shop with three agents, then serve it")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    demo.add_argument("--database", default="nameplate-demo.db")
    demo.set_defaults(func=cmd_demo)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=cmd_migrate)

    site = commands.add_parser("site", help="manage sites").add_subparsers(dest="action", required=True)
    site_create = site.add_parser("create", help="create a site")
    site_create.add_argument("--name", required=True)
    site_create.add_argument("--origin", action="append", help="an origin allowed to embed the widget; repeat")
    site_create.set_defaults(func=cmd_site_create)

    agent = commands.add_parser("agent", help="manage agents").add_subparsers(dest="action", required=True)
    agent_create = agent.add_parser(
        "create", help="create an agent (password from NAMEPLATE_AGENT_PASSWORD or asked for)"
    )
    agent_create.add_argument("--site", required=True, help="the site's public key")
    agent_create.add_argument("--given-name", required=True)
    agent_create.add_argument("--family-name", required=True)
    agent_create.add_argument("--email", required=True)
    agent_create.add_argument("--title", default="")
    agent_create.add_argument("--intro", default="")
    agent_create.add_argument("--role", default="agent", choices=["agent", "supervisor", "admin"])
    agent_create.add_argument("--capacity", type=int, default=None)
    agent_create.add_argument("--photo", help="PNG, JPEG or WebP portrait")
    agent_create.set_defaults(func=cmd_agent_create)

    export = commands.add_parser("export", help="messages of conversations started in a date range, as CSV or JSON")
    export.add_argument("--site", required=True, help="the site's public key")
    export.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD (UTC)")
    export.add_argument("--to", dest="date_to", required=True, help="last day, YYYY-MM-DD (UTC), included")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--output", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_export)

    apikey = commands.add_parser("apikey", help="site API keys for the customer events API")
    apikey_actions = apikey.add_subparsers(dest="action", required=True)
    for action, text in (("create", "create a key (printed once)"), ("revoke", "revoke a key"), ("list", "list")):
        sub = apikey_actions.add_parser(action, help=text)
        sub.add_argument("--site", required=True, help="the site's public key")
        if action == "create":
            sub.add_argument("--name", required=True, help="what uses the key")
        if action == "revoke":
            sub.add_argument("--id", required=True)
        sub.set_defaults(func=cmd_apikey)
    return parser


def configure_logging(command: str, verbose: bool) -> None:
    """INFO for a server's own log; the demo says only what a newcomer needs (its banner, then uvicorn's
    lines) unless asked for more with --verbose or LOG_LEVEL. Migrations talk at INFO only when asked."""
    asked = os.environ.get("LOG_LEVEL")
    if verbose:
        level = logging.DEBUG if asked and asked.lower() == "debug" else logging.INFO
    elif asked:
        level = logging.getLevelName(asked.upper())
        level = level if isinstance(level, int) else logging.INFO
    else:
        level = logging.WARNING if command == "demo" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    if not verbose and not asked:
        logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.command, args.verbose)
    args.func(args)
