"""The web console: `frameseek serve --http-address HOST:PORT` serves pages to browse the library,
search by a dropped picture or clip, watch ingests and read the stats (see README, "Web console").

It runs in the server's process and event loop (uvicorn), talks to the service through the public
gRPC API (rpc.py), and keeps thumbnails and originals beside the index (store.py)."""

from .server import Console

__all__ = ["Console"]
