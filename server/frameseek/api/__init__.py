"""The gRPC API layer: frameseek.v1 in, the service's verbs out.

servicer.py   FrameSeekServicer (one method per RPC) and add_servicer
messages.py   records <-> messages (Translator, the hand-encoded search responses)
names.py      resource-name grammar (names <-> ids)
pages.py      page sizes and page tokens
uploads.py    upload streams: spooling, hashing, size / idle / per-client bounds, server_path
status.py     the one ServiceError -> gRPC status + ErrorInfo mapping
"""
