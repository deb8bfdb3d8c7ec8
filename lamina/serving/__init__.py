"""Serving a saved model over HTTP: the request schema (schema.py), micro-batching (batcher.py),
the FastAPI app (app.py) and its web page (page.py). Needs `pip install lamina[serve]`."""
