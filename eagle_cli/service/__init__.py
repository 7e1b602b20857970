"""eagle serve: the expert as an HTTP inspection service (FastAPI + uvicorn, the ``serve`` extra)."""
