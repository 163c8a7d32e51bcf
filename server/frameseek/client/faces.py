"""The client's calls for faces collections: search by a face, and the people found."""

from __future__ import annotations

from collections.abc import Iterator

from ..v1 import frameseek_pb2 as pb
from ._transport import (
    MediaInput,
    _read_all,
    collection_name,
)


class FaceCalls:
    """SearchByFace and the people RPCs, mixed into `Client` (uses its `_call`, `_options`, `stub`)."""

    def search_by_face(
        self,
        photo: MediaInput,
        *,
        collection: str = "",
        face: tuple[float, float, float, float] | None = None,
        k: int = 10,
        min_score: float = 0.0,
        max_matches_per_video: int = 0,
        labels: dict | None = None,
        videos: list[str] | None = None,
        exclude_videos: list[str] | None = None,
        timeout: float | None = None,
    ) -> pb.SearchByFaceResponse:
        """Where the person of `photo` appears (collections created with faces=True). `face`:
        (x0, y0, x1, y1) pixels of the one face to search; otherwise every face of the photo."""
        data, _ = _read_all(photo)
        req = pb.SearchByFaceRequest(
            parent=collection_name(collection),
            image=data,
            options=self._options(k, min_score, max_matches_per_video, 0, labels, videos, exclude_videos),
        )
        if face is not None:
            req.face.CopyFrom(pb.FaceBox(x0=face[0], y0=face[1], x1=face[2], y1=face[3]))
        return self._call(self.stub.SearchByFace, req, timeout)

    def list_people(self, collection: str = "", page_size: int = 0) -> Iterator[pb.Person]:
        """Every person of a faces collection (all pages)."""
        token = ""
        while True:
            r = self._call(
                self.stub.ListPeople,
                pb.ListPeopleRequest(parent=collection_name(collection), page_size=page_size, page_token=token),
            )
            yield from r.people
            token = r.next_page_token
            if not token:
                return

    def video_people(self, video: str) -> list[pb.Person]:
        """The persons in one video (`collections/{c}/videos/{v}`), with their intervals there."""
        return list(self._call(self.stub.GetVideoPeople, pb.GetVideoPeopleRequest(name=video)).people)

    def update_person(self, person: str, display_name: str) -> pb.Person:
        """Name a person (`collections/{c}/people/{p}`)."""
        req = pb.UpdatePersonRequest(person=pb.Person(name=person, display_name=display_name))
        return self._call(self.stub.UpdatePerson, req, retry=False)
