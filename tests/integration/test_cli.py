"""The `nameplate` command's management verbs against a real database file (run in-process on a thread,
with its own event loop, exactly as the console script calls `main`)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nameplate.cli import main
from tests.harness import RunningServer, connect_agent, connect_visitor


@pytest.fixture
def cli(server: RunningServer, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("DATABASE_URL", server.services.settings.database_url)
    monkeypatch.setenv("SECRET_KEY", server.services.settings.secret_key)
    monkeypatch.setenv("NAMEPLATE_AGENT_PASSWORD", "a-long-password")
    monkeypatch.delenv("REDIS_URL", raising=False)

    async def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()

        def call() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main(list(args))
                except SystemExit as exit_:
                    return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
            return 0

        code = await asyncio.to_thread(call)
        return code, out.getvalue(), err.getvalue()

    return run


async def test_export_streams_the_messages_of_a_date_range(server: RunningServer, cli) -> None:  # noqa: ANN001
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="1", body="=SUM(A1:A9) is not a formula here")
    await agent.expect("assigned")
    today = datetime.now(UTC).date().isoformat()
    code, out, err = await cli("export", "--site", "site_demo", "--from", today, "--to", today)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:3] == ["conversation_id", "seq", "sent_at"]
    assert "'=SUM(A1:A9) is not a formula here" in [row[-1] for row in rows[1:]]
    code, out, _ = await cli("export", "--site", "site_demo", "--from", today, "--to", today, "--format", "json")
    assert code == 0 and any(m["body"].startswith("=SUM") for m in json.loads(out)["messages"])


async def test_site_agent_and_apikey_commands(cli) -> None:  # noqa: ANN001
    code, out, err = await cli("site", "create", "--name", "Second shop", "--origin", "https://second.example")
    assert code == 0, err
    key = next(line.split(":")[-1].strip() for line in out.splitlines() if "public key" in line)
    photo = Path(__file__).resolve().parents[2] / "server" / "demo" / "assets" / "jane.png"  # noqa: ASYNC240
    code, out, err = await cli(
        "agent",
        "create",
        "--site",
        key,
        "--given-name",
        "Ola",
        "--family-name",
        "Nordmann",
        "--email",
        "ola@second.example",
        "--title",
        "Support",
        "--photo",
        str(photo),
    )
    assert code == 0 and "Ola Nordmann" in out, err
    code, _, err = await cli(
        "agent", "create", "--site", key, "--given-name", " ", "--family-name", "X", "--email", "x@second.example"
    )
    assert code == 2 and "given name is required" in err
    code, out, _ = await cli("apikey", "create", "--site", key, "--name", "till")
    secret = out.split()[-1]
    assert code == 0 and secret.startswith("np_")
    code, out, _ = await cli("apikey", "list", "--site", key)
    assert "till" in out and secret not in out
