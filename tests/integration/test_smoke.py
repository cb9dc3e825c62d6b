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
