"""List pagination: page sizes and opaque page tokens (base64 of '<list kind>:<position>')."""

from __future__ import annotations

import base64
import binascii

from ..errors import invalid

DEFAULT_PAGE = 50
MAX_PAGE = 1000


def page_size(n: int) -> int:
    if n < 0:
        raise invalid("page_size must be >= 0", field="page_size")
    return min(n or DEFAULT_PAGE, MAX_PAGE)


def encode_token(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(token: str, kind: str) -> str:
    """The position a token of list `kind` holds ('' for no token)."""
    if not token:
        return ""
    try:
        k, _, v = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("malformed page_token", field="page_token") from None
    if k != kind:
        raise invalid("page_token belongs to another list", field="page_token")
    return v


def decode_id_token(token: str, kind: str) -> int | None:
    """A token whose position is a row id (ListVideos): None for no token."""
    v = decode_token(token, kind)
    if not token:
        return None
    if not (v.isascii() and v.isdigit() and len(v) <= 19):
        raise invalid("malformed page_token", field="page_token")
    return int(v)
