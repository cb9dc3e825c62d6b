import httpx

from nameplate.assets import WIDGET_DIR
from tests.harness import RunningServer, connect_agent, connect_visitor


async def test_visitor_and_agent_chat(server: RunningServer) -> None:
    agent = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await visitor.send(type="message", client_id="c1", body="Hello, is anyone there?")
    ack = await visitor.expect("ack")
    joined = await visitor.expect("agent_joined")
    assert joined["agent"]["name"]
    assigned = await agent.expect("assigned")
    cid = assigned["conversation"]["id"]
    first = await agent.expect("message", lambda f: f["seq"] == ack["seq"])
    assert first["body"] == "Hello, is anyone there?"
    await agent.send(type="message", conversation_id=cid, client_id="a1", body="Hi! Jane here.")
    reply = await visitor.expect("message", lambda f: f["author"]["kind"] == "agent")
    assert reply["body"] == "Hi! Jane here."


async def test_the_widget_script_is_served_gzipped_with_its_own_etag(server: RunningServer) -> None:
    source = (WIDGET_DIR / "nameplate.js").read_bytes()
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        plain = await http.get("/widget.js", headers={"Accept-Encoding": "identity"})
        packed = await http.get("/widget.js", headers={"Accept-Encoding": "gzip, br"})
        again = await http.get(
            "/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]}
        )
    assert plain.content == source and "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.content == source  # httpx decodes it
    assert int(packed.headers["content-length"]) < len(source) / 2
    assert packed.headers["etag"] != plain.headers["etag"] and "Accept-Encoding" in packed.headers["vary"]
    assert again.status_code == 304
