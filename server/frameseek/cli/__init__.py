"""The `frameseek` command line: run the server, and talk to one through frameseek.client.

Human-readable output by default, `--json` for machines. Clients find the server with
`--server HOST:PORT` or FRAMESEEK_SERVER (default 127.0.0.1:50051), and authenticate with
`--token` (FRAMESEEK_TOKEN), `--tls-ca` (FRAMESEEK_TLS_CA) and, for mTLS, `--tls-cert`/`--tls-key`
(FRAMESEEK_CLIENT_CERT/KEY: FRAMESEEK_TLS_CERT/KEY are `serve`'s own certificate and key).

The commands live one module per family (serve, ingest, search, faces, items, library); they are
registered here, in the order `frameseek --help` lists them.
"""

from __future__ import annotations

from . import faces, ingest, items, library, search, serve
from ._common import app

app.command()(serve.serve)
app.command("hash-token")(serve.hash_token)
app.command()(ingest.ingest)
app.command("search-image")(search.search_image)
app.command("search-face")(faces.search_face)
app.command()(faces.people)
app.command("search-video")(search.search_video)
app.command()(library.videos)
app.command()(library.delete)
app.command()(library.stats)
app.command()(items.upsert)
app.command("create-collection")(library.create_collection)
app.command("search-audio")(items.search_audio)
app.command()(library.collections)

try:  # the media stream's `frameseek embed` (frameseek/media_cli.py), when installed
    from ..media_cli import register as _register_media
except ImportError:
    _register_media = None
if _register_media is not None:
    _register_media(app)


def main() -> None:
    app()
