"""A returning customer goes to the person who helped them before, when that person can take them."""

from __future__ import annotations

from tests.harness import Client, RunningServer, connect_agent, connect_visitor


async def chat_and_close(visitor: Client, agent: Client, text: str) -> str:
    await visitor.send(type="message", client_id=text, body=text)
    assigned = await agent.expect("assigned")
    conversation_id = assigned["conversation"]["id"]
    await visitor.expect("agent_joined", lambda f: f["conversation_id"] == conversation_id)
    await agent.send(type="close", conversation_id=conversation_id)
    await visitor.expect("closed", lambda f: f["conversation_id"] == conversation_id)
    return conversation_id


async def test_returning_customer_lands_with_their_previous_agent(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await chat_and_close(visitor, jane, "first visit")
    # Priya is idle and Jane now carries more chats, so least-busy routing alone would pick Priya.
    priya = await connect_agent(server, "priya@acme.example", status="available")
    others = []
    for n in range(2):
        other, _ = await connect_visitor(server)
        await other.send(type="message", client_id=f"o{n}", body="hello")
        await other.expect("agent_joined")
        others.append(other)
    await visitor.send(type="message", client_id="second", body="I'm back about the same order")
    joined = await visitor.expect("agent_joined")
    assert joined["agent"]["name"] == "Jane Chang-Katzenberg"
    assigned = await jane.expect(
        "assigned", lambda f: f["conversation"]["customer"]["id"] == visitor.of_type("welcome")[0]["customer"]["id"]
    )
    assert assigned["conversation"]["previous_agent"]["name"] == "Jane Chang-Katzenberg"
    assert priya.of_type("welcome")


async def test_previous_agent_away_means_normal_routing_and_the_new_agent_sees_who_helped(
    server: RunningServer,
) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, _ = await connect_visitor(server)
    await chat_and_close(visitor, jane, "first visit")
    await jane.send(type="status", status="away")
    await jane.expect("status", lambda f: f["status"] == "away")
    tomas = await connect_agent(server, "tomas@acme.example", status="available")
    await visitor.send(type="message", client_id="again", body="Back again")
    joined = await visitor.expect("agent_joined")
    assert joined["agent"]["given_name"] == "Tomás"
    assigned = await tomas.expect("assigned")
    assert assigned["conversation"]["previous_agent"]["name"] == "Jane Chang-Katzenberg"


async def test_previous_agent_full_offers_a_choice_and_honours_it(server: RunningServer) -> None:
    jane = await connect_agent(server, "jane@acme.example")
    visitor, token = await connect_visitor(server)
    await chat_and_close(visitor, jane, "first visit")
    for n in range(3):  # Jane fills up
        other, _ = await connect_visitor(server)
        await other.send(type="message", client_id=f"f{n}", body="hi")
        await other.expect("agent_joined")
    tomas = await connect_agent(server, "tomas@acme.example", status="available")
    await visitor.send(type="message", client_id="back", body="Is Jane there?")
    offer = await visitor.expect("offer")
    assert offer["agent"]["name"] == "Jane Chang-Katzenberg" and offer["expected_wait_s"] >= 0
    # Another tab (or a reconnect) is offered the same choice.
    other_tab, _ = await connect_visitor(server, token)
    assert (await other_tab.expect("offer"))["conversation_id"] == offer["conversation_id"]
    # Waiting for Jane keeps the visitor queued even though Tomás has room.
    await visitor.send(type="choose", wait=True)
    await visitor.send(type="ping")
    await visitor.expect("pong")
    assert len(visitor.of_type("agent_joined")) == 1  # only the first visit's
    await visitor.send(type="choose", wait=False)
    joined = await visitor.expect("agent_joined", lambda f: f["agent"]["given_name"] == "Tomás")
    assert joined["agent"]["family_name"] == "Okafor-Lindqvist"
    assert (await tomas.expect("assigned"))["conversation"]["previous_agent"]["given_name"] == "Jane"


async def test_team_choice_routes_to_that_teams_agents(server: RunningServer) -> None:
    teams = {
        t.name: t.id
        for t in await server.services.directory.teams((await server.services.directory.site_by_key("site_demo")).id)
    }
    jane = await connect_agent(server, "jane@acme.example")  # Support
    priya = await connect_agent(server, "priya@acme.example", status="available")  # Sales
    visitor, _ = await connect_visitor(server)
    assert {t["name"] for t in visitor.of_type("welcome")[0]["teams"]} == {"Sales", "Support"}
    await visitor.send(type="message", client_id="s", body="I'd like to buy 40 tents", team_id=teams["Sales"])
    joined = await visitor.expect("agent_joined")
    assert joined["agent"]["given_name"] == "Priya"
    assert (await priya.expect("assigned"))["conversation"]["team_id"] == teams["Sales"]
    assert not jane.of_type("assigned")
