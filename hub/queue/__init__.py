"""The one durable queue, one module a stage in the order a request flows.

``requests`` (the normalized inbound request) → ``intake`` (group-committed, idempotent, threaded)
→ ``cases`` (states, transitions, audit) → ``routing`` (the routing stage) → ``workers`` (the runners
that drive the stages) → ``outbox`` with ``adapters`` (answers leave on the case's channel) → ``sla``
(the business-hours clock) → ``privacy`` (purge and forget). ``settings`` holds ``[queue]`` and
``[privacy]``.
"""
