"""CLI command groups. Each module exposes ``register(app)`` and imports no heavy library at import time."""
