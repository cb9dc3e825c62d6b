"""Use cases: one function per thing a person does (send a message, close a chat, identify, ...).

Endpoints (`realtime/`, `web/`) parse a request, make one call here and send what it returns; the action
runs the whole sequence — store first, then deliver, publish and tell webhooks — so the visitor's socket,
the agent's socket and the HTTP API cannot do the same thing in different orders. Actions reach the store
and the broker only through the services (`nameplate.services.Services`), and never import Starlette.
"""
