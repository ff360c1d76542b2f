"""citizen-hub: one normalized request queue and one knowledge base for every channel.

The package is laid out in the order a request flows (see ``docs/architecture.md``): ``queue/`` (the
request model, intake, cases, routing, workers, outbox, SLA clock, privacy), ``casework`` (every action
an agent takes on a case), ``http/`` (the aiohttp app and the JSON APIs), ``console/`` (agents and
supervisors), ``cli/`` (the ``citizen-hub`` command). Channels plug in through :mod:`hub.plugins`.
"""

__version__ = "0.1.0"
