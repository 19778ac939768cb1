"""ASGI apps the benchmark serves as reference points (run by uvicorn with ``--app-dir bench``)."""
