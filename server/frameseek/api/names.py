"""Resource names (Google API design guide): the one place their grammar lives.

    collections/{collection}                      collection ids: [a-z][a-z0-9-]{0,62}
    collections/{collection}/videos/{video}       video ids: ASCII decimal, 1..19 digits, < 2**63
    ingestJobs/{ingest_job}

The service takes ids; these functions turn names into ids (INVALID_ARGUMENT for a malformed name,
quoting at most a few dozen characters of it) and ids into names.
"""

from __future__ import annotations

import re

from ..errors import invalid, quoted
from ..service import COLLECTION_ID_RE, DEFAULT_COLLECTION

ALL_COLLECTIONS = "collections/-"  # ListVideos' parent for every collection
_VIDEO_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also accepts '²' and '١'
_MAX_VIDEO_ID = 2**63 - 1  # the catalog's INTEGER PRIMARY KEY


def collection_name(collection: str) -> str:
    return f"collections/{collection}"


def video_name(collection: str, video_id: int) -> str:
    return f"collections/{collection}/videos/{video_id}"


def job_name(job_id: str) -> str:
    return f"ingestJobs/{job_id}"


def parse_collection(name: str, field: str = "parent") -> str:
    """'collections/{c}' -> c; '' -> the default collection."""
    if not name:
        return DEFAULT_COLLECTION
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "collections" or not COLLECTION_ID_RE.fullmatch(parts[1]):
        raise invalid(
            f"malformed collection name {quoted(name)}; expected 'collections/{{collection}}' with a "
            "collection id of [a-z][a-z0-9-]{0,62}",
            field=field,
        )
    return parts[1]


def parse_video(name: str, field: str = "name") -> tuple[str, int]:
    """'collections/{c}/videos/{v}' -> (c, v)."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "collections"
        or not COLLECTION_ID_RE.fullmatch(parts[1])
        or parts[2] != "videos"
        or not _VIDEO_ID.fullmatch(parts[3])
        or int(parts[3]) > _MAX_VIDEO_ID
    ):
        raise invalid(
            f"malformed video name {quoted(name)}; expected 'collections/{{collection}}/videos/{{id}}' "
            "with a decimal id",
            field=field,
        )
    return parts[1], int(parts[3])


def person_name(collection: str, person_id: int) -> str:
    return f"collections/{collection}/people/{person_id}"


def parse_person(name: str, field: str = "person.name") -> tuple[str, int]:
    """'collections/{c}/people/{p}' -> (c, p)."""
    parts = name.split("/")
    if (
        len(parts) != 4
        or parts[0] != "collections"
        or not COLLECTION_ID_RE.fullmatch(parts[1])
        or parts[2] != "people"
        or not _VIDEO_ID.fullmatch(parts[3])
        or int(parts[3]) > _MAX_VIDEO_ID
    ):
        raise invalid(
            f"malformed person name {quoted(name)}; expected 'collections/{{collection}}/people/{{id}}' "
            "with a decimal id",
            field=field,
        )
    return parts[1], int(parts[3])


def parse_job(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "ingestJobs" or not parts[1]:
        raise invalid(f"malformed job name {quoted(name)}; expected 'ingestJobs/{{ingest_job}}'", field="name")
    return parts[1]
