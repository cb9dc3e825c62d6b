"""Settings: every knob read from the environment in one typed place, with defaults for the embedded mode."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("nameplate.config")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./nameplate.db"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def normalise_database_url(url: str) -> str:
    """Accept the URLs users paste from their host (postgres://, sqlite:///) and pick the async driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///"):
        url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def sqlite_path(database_url: str) -> Path | None:
    """The file behind an SQLite URL, or None for other engines and in-memory databases."""
    prefix = "sqlite+aiosqlite:///"
    if not database_url.startswith(prefix):
        return None
    raw = database_url[len(prefix) :].split("?", 1)[0]
    if raw in ("", ":memory:"):
        return None
    return Path(raw)


def _load_or_create_secret(database_url: str) -> str:
    """A secret generated once and kept beside the database, so sessions survive restarts."""
    db_file = sqlite_path(database_url)
    folder = db_file.parent if db_file else Path.cwd()
    secret_file = folder / ".nameplate-secret"
    if secret_file.exists():
        return secret_file.read_text().strip()
    log.warning(
        "SECRET_KEY is not set: generated one and stored it in %s. Set SECRET_KEY in production, "
        "the same value in every process.",
        secret_file,
    )
    folder.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    secret_file.write_text(value)
    secret_file.chmod(0o600)
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_prefix: str = "nameplate:"
    secret_key: str = field(default="", repr=False)
    public_url: str | None = None
    max_message_chars: int = 4000
    agent_default_capacity: int = 3
    # 30 s: long enough for a page reload or a short network blip, short enough that a visitor is not
    # left talking to nobody.
    agent_grace_seconds: float = 30.0
    # How often each process looks for agents whose grace period ran out and refreshes its presence.
    presence_interval_seconds: float = 5.0
    # A visitor may send a burst of 10 messages, then one per 0.5 s on average.
    message_burst: int = 10
    message_refill_per_second: float = 2.0
    log_level: str = "info"
    # Connections per process to PostgreSQL, kept open; callers beyond them wait their turn. The message log
    # has one more of its own.
    database_pool_size: int = 20
    # Widget tokens minted per client address per minute (POST /api/v1/visitors). Each is a customer row;
    # real browsers ask once and keep theirs, so even a busy office behind one address stays far below.
    visitor_tokens_per_minute: int = 120
    # How long widget tokens last: an anonymous one (a returning visitor finds their chat), a verified
    # customer's (renewed with each verified identify).
    anonymous_token_days: float = 30.0
    verified_token_hours: float = 24.0
    # Webhooks to loopback, private, link-local and metadata addresses are refused unless this is on
    # (a site admin must not reach the server's own network through them).
    webhooks_allow_private: bool = False
    # Proxies whose X-Forwarded-For uvicorn believes (uvicorn's own setting, passed through by serve).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Insight: a queued visitor gone this long has given up; digests go out at this local time.
    abandon_grace_seconds: float = 20.0
    digest_time: str = "08:00"
    digest_timezone: str = "UTC"
    # Repeated questions: "auto" (the sentence model when nameplate[topics] is installed), "semantic", "lexical".
    topics_embedder: str = "auto"
    # E-mail (server/mail): no SMTP_URL keeps every mail in the store's dev outbox, read in the console.
    smtp_url: str | None = field(default=None, repr=False)
    # The SMTP listener for replies, started by `nameplate serve` when a port is given.
    inbound_smtp_host: str = "0.0.0.0"
    inbound_smtp_port: int | None = None
    # Shared secret of the HTTP inbound hook (POST /mail/inbound); unset, the hook is off.
    inbound_hook_secret: str | None = field(default=None, repr=False)
    # Agent replies the widget has not shown as read after this long are mailed, batched into one mail.
    mail_unread_delay_seconds: float = 120.0
    # First retry after 30 s, doubling: a mail server's restart or greylisting is ridden out.
    mail_retry_base_seconds: float = 30.0
    # A chat closed without a rating gets its one-question rating mail this long after closing.
    mail_rating_delay_seconds: float = 600.0

    @property
    def cookie_secure(self) -> bool:
        return bool(self.public_url and self.public_url.startswith("https://"))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        database_url = normalise_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        secret = env.get("SECRET_KEY") or _load_or_create_secret(database_url)
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("REDIS_PREFIX") or "nameplate:",
            secret_key=secret,
            public_url=(env.get("PUBLIC_URL") or "").rstrip("/") or None,
            max_message_chars=_int(env, "MAX_MESSAGE_CHARS", 4000),
            agent_default_capacity=_int(env, "AGENT_DEFAULT_CAPACITY", 3),
            agent_grace_seconds=_float(env, "AGENT_GRACE_SECONDS", 30.0),
            presence_interval_seconds=_float(env, "PRESENCE_INTERVAL_SECONDS", 5.0),
            message_burst=_int(env, "MESSAGE_BURST", 10),
            message_refill_per_second=_float(env, "MESSAGE_REFILL_PER_SECOND", 2.0),
            log_level=env.get("LOG_LEVEL") or "info",
            database_pool_size=_int(env, "DATABASE_POOL_SIZE", 20),
            visitor_tokens_per_minute=_int(env, "VISITOR_TOKENS_PER_MINUTE", 120),
            anonymous_token_days=_float(env, "ANONYMOUS_TOKEN_DAYS", 30.0),
            verified_token_hours=_float(env, "VERIFIED_TOKEN_HOURS", 24.0),
            webhooks_allow_private=_bool(env, "WEBHOOKS_ALLOW_PRIVATE", False),
            forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1",
            abandon_grace_seconds=_float(env, "ABANDON_GRACE_SECONDS", 20.0),
            digest_time=env.get("DIGEST_TIME") or "08:00",
            digest_timezone=env.get("DIGEST_TIMEZONE") or "UTC",
            topics_embedder=env.get("TOPICS_EMBEDDER") or "auto",
            smtp_url=env.get("SMTP_URL") or None,
            inbound_smtp_host=env.get("INBOUND_SMTP_HOST") or "0.0.0.0",
            inbound_smtp_port=_int(env, "INBOUND_SMTP_PORT", 0) or None,
            inbound_hook_secret=env.get("INBOUND_HOOK_SECRET") or None,
            mail_unread_delay_seconds=_float(env, "MAIL_UNREAD_DELAY_SECONDS", 120.0),
            mail_retry_base_seconds=_float(env, "MAIL_RETRY_BASE_SECONDS", 30.0),
            mail_rating_delay_seconds=_float(env, "MAIL_RATING_DELAY_SECONDS", 600.0),
        )
