"""`frameseek serve` and `frameseek hash-token`: running the server and minting its tokens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    _path,
    err,
)


def serve(
    address: Annotated[str | None, typer.Option(help="HOST:PORT to listen on [default: 127.0.0.1:50051]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="data directory [default: ./data]")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (or FRAMESEEK_CONFIG)")] = None,
    metrics_address: Annotated[str | None, typer.Option(help="Prometheus HOST:PORT, '' = off")] = None,
    log_format: Annotated[str | None, typer.Option(help="console | json")] = None,
    port_file: Annotated[str | None, typer.Option(help="write the bound port here once listening")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="serving processes sharing the port: 1 primary (all "
            "writes) + N-1 search replicas; raise up to the core count "
            "when searches saturate one core [default: 1]"
        ),
    ] = None,
    front_end: Annotated[
        str | None,
        typer.Option(
            help="native: a C++ gRPC server answers SearchByVector and "
            "passes the rest to Python; python: grpc.aio only "
            "[default: native]"
        ),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve TLS with this certificate chain (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key of --tls-cert (PEM)")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="require client certificates signed by this CA (mTLS)")
    ] = None,
    auth_tokens: Annotated[
        Path | None,
        typer.Option(
            help="TOML file of token entries (name, role, sha256): every call needs a bearer token (reloaded on SIGHUP)"
        ),
    ] = None,
    insecure: Annotated[
        bool | None,
        typer.Option(
            "--insecure", help="serve a non-loopback address without TLS and client authentication (refused otherwise)"
        ),
    ] = None,
    http_address: Annotated[
        str | None, typer.Option(help="HOST:PORT of the web console, e.g. 127.0.0.1:8080 [default: off]")
    ] = None,
) -> None:
    """Run the server until Ctrl-C / SIGTERM (then drain and flush)."""
    import asyncio

    from ..config import load_settings
    from ..logs import configure
    from ..server import serve as run

    settings = load_settings(
        str(config) if config else None,
        address=address,
        data_dir=data_dir,
        metrics_address=metrics_address,
        log_format=log_format,
        workers=workers,
        front_end=front_end,
        tls_cert=_path(tls_cert),
        tls_key=_path(tls_key),
        tls_client_ca=_path(tls_client_ca),
        auth_tokens=_path(auth_tokens),
        insecure=insecure,
        http_address=http_address,
    )
    configure(settings.log_format, settings.log_level)
    asyncio.run(run(settings, port_file))


def hash_token(
    name: Annotated[str, typer.Option(help="the entry's name")] = "client",
    role: Annotated[str, typer.Option(help="reader | writer | admin")] = "reader",
) -> None:
    """Print a token entry for --auth-tokens. The token is read from stdin (one line); with no
    stdin (a terminal) a new random token is made and printed to stderr, once."""
    import secrets

    from ..api.auth import ROLES
    from ..api.auth import hash_token as sha256_hex

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}", param_hint="--role")
    if sys.stdin.isatty():
        token = secrets.token_urlsafe(32)
        err.print(f"token (give it to the client, it is not stored): {token}", markup=False, highlight=False)
    else:
        token = sys.stdin.readline().strip()
        if not token:
            raise typer.BadParameter("no token on stdin")
    print(f'[[token]]\nname = {json.dumps(name)}\nrole = "{role}"\nsha256 = "{sha256_hex(token)}"')
