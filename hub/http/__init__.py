"""The HTTP side of the hub: the aiohttp app (``app``), the route registry (``routes``), the JSON APIs
(``api_knowledge``, ``api_cases``, ``api_catalog``), ``openapi``, ``metrics``, bearer ``tokens``, the
request helpers every page shares (``csrf``, ``ratelimit``) and the multi-process ``intake_server``."""
