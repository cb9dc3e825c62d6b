"""The baseline: a bare relay written directly on the `websockets` library.

No store, no routing, no validation beyond parsing JSON. A socket first says `hello {pair, role}`; after
that every frame it sends is forwarded as is to the other socket of its pair, and the sender gets
`ack {client_id}` — the least any chat relay does. Same loop (uvloop when installed), no compression and
20 s pings, like the server. Run: `python -m bench.relay --port 8999`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

PEERS: dict[str, dict[str, ServerConnection]] = {}
OTHER = {"visitor": "agent", "agent": "visitor"}


async def relay(ws: ServerConnection) -> None:
    hello = json.loads(await ws.recv())
    pair, role = str(hello["pair"]), str(hello["role"])
    peers = PEERS.setdefault(pair, {})
    peers[role] = ws
    other_role = OTHER[role]
    try:
        await ws.send('{"type":"welcome"}')
        async for raw in ws:
            frame = json.loads(raw)
            other = peers.get(other_role)
            if other is not None:
                try:
                    await other.send(raw)
                except ConnectionClosed:
                    pass
            await ws.send(json.dumps({"type": "ack", "client_id": frame.get("client_id")}, separators=(",", ":")))
    except ConnectionClosed:
        pass
    finally:
        if peers.get(role) is ws:
            del peers[role]
        if not peers:
            PEERS.pop(pair, None)


async def main(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(relay, host, port, compression=None, ping_interval=20, ping_timeout=20, max_size=2**16):
        await stop


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.host, args.port))
    else:
        uvloop.run(main(args.host, args.port))


if __name__ == "__main__":
    run()
