"""citizen-hub: one normalized request queue and one knowledge base for every channel."""

__version__ = "0.1.0"

# Import the config model first: feature modules subclass its Section and it imports their sections.
from hub import config as _config  # noqa: E402,F401
