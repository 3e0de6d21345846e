"""The HTTP service: ``create_app(settings)`` (app.py), batching (batching.py), model pool (pool.py), metrics,
settings, a Python client (client.py) and ``python -m service`` (serve / compress / decompress / openapi)."""
