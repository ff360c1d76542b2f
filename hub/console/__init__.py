"""The agent and supervisor console: pages and their JSON twins (``pages``), call records (``calls``),
the supervisor ``dashboard``, accounts, sessions and lockout (``auth``) and ``[console]`` (``settings``)."""
