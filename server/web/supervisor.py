"""The supervisor desk pages (placeholder until the console lands)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
