"""frameseek.v1 messages <-> the service's records: `Translator` (records -> protos, with the
search responses encoded by the native front end's encoder on the hot path) and the request conversions (protos -> the
service's arguments, resource names parsed into ids)."""

from __future__ import annotations

import time

import numpy as np

from .. import _native
from ..errors import invalid
from ..modality.audio import AUDIO
from ..service import (
    ITEM_KIND,
    OWN_VECTORS_MODEL,
    AudioHit,
    CopyMatch,
    FrameSeekService,
    Hit,
    IngestRequest,
    IngestResult,
    ItemBatch,
    PersonView,
    QueryFace,
    SearchOptions,
)
from ..storage import CollectionRecord, JobRecord, VideoRecord
from ..v1 import frameseek_pb2 as pb
from .names import collection_name, job_name, parse_collection, parse_video, person_name, video_name

_METRIC = {"ip": pb.METRIC_COSINE, "l2": pb.METRIC_L2}
_KIND = {"video": pb.MEDIA_KIND_VIDEO, "image": pb.MEDIA_KIND_IMAGE, ITEM_KIND: pb.MEDIA_KIND_ITEM}
#: Collection.metric -> the service's metric names (an unknown number is refused by the service)
METRIC_IN = {pb.METRIC_UNSPECIFIED: "ip", pb.METRIC_COSINE: "ip", pb.METRIC_L2: "l2"}
#: VideoQuery.region_search -> SamplingSettings.regions (None = the server's setting; an unknown
#: value from a newer client is refused by the service as INVALID_ARGUMENT)
REGION_SEARCH = {
    pb.REGION_SEARCH_UNSPECIFIED: None,
    pb.REGION_SEARCH_OFF: "off",
    pb.REGION_SEARCH_AUTO: "auto",
    pb.REGION_SEARCH_ON: "on",
}
_POLICY = {
    pb.DUPLICATE_POLICY_UNSPECIFIED: "ALLOW",
    pb.DUPLICATE_POLICY_ALLOW: "ALLOW",
    pb.DUPLICATE_POLICY_REPORT: "REPORT",
    pb.DUPLICATE_POLICY_REJECT: "REJECT",
}
_JOB_STATE = {
    "QUEUED": pb.INGEST_JOB_STATE_QUEUED,
    "RUNNING": pb.INGEST_JOB_STATE_RUNNING,
    "SUCCEEDED": pb.INGEST_JOB_STATE_SUCCEEDED,
    "FAILED": pb.INGEST_JOB_STATE_FAILED,
}


def _face_box(b) -> pb.FaceBox:
    return pb.FaceBox(x0=b[0], y0=b[1], x1=b[2], y1=b[3])


def _aligned_segment(s) -> pb.AlignedSegment:
    return pb.AlignedSegment(
        query_start_seconds=s.query_start,
        query_end_seconds=s.query_end,
        reference_start_seconds=s.ref_start,
        reference_end_seconds=s.ref_end,
        score=s.score,
    )


def _ts(msg, seconds: float) -> None:
    if seconds:
        msg.FromNanoseconds(int(seconds * 1e9))


class Translator:
    """Records -> protos."""

    def __init__(self, service: FrameSeekService):
        self.collection_id_of = service.collections.id_of
        self.audio_seconds = service.soundtracks.audio_seconds
        self._videos: dict[int, tuple[VideoRecord, pb.Video]] = {}
        self._video_bytes: dict[int, tuple[VideoRecord, bytes]] = {}

    def collection(self, rec: CollectionRecord, counts: tuple[int, int, float] | None = None) -> pb.Collection:
        c = pb.Collection(
            name=collection_name(rec.name),
            description=rec.description,
            model=rec.model,
            dimension=rec.dimension,
            metric=_METRIC.get(rec.metric, pb.METRIC_UNSPECIFIED),
            sampling=pb.SamplingSettings(
                fps=rec.sampling.get("fps", 0),
                keep_blank_frames=rec.sampling.get("keep_blank_frames", False),
                dedup_threshold=rec.sampling.get("dedup_threshold", 0),
                keyframes_only=rec.sampling.get("keyframes_only", False),
            ),
            index=pb.IndexSettings(
                m=rec.index.get("m", 0),
                ef_construction=rec.index.get("ef_construction", 0),
                ef_search=rec.index.get("ef_search", 0),
                target_recall=rec.index.get("target_recall", 0),
                layer0_links=rec.index.get("layer0_links", 0),
            ),
            is_default=rec.is_default,
            faces="faces" in rec.modalities,
            audio=AUDIO.name in rec.modalities,
            own_vectors=rec.model == OWN_VECTORS_MODEL,
            vector_dimension=rec.dimension if rec.model == OWN_VECTORS_MODEL else 0,
        )
        if counts:
            c.video_count, c.sample_count = counts[0], counts[1]
        _ts(c.create_time, rec.create_time)
        return c

    def video(self, v: VideoRecord) -> pb.Video:
        """Videos are immutable once indexed, so search results reuse one message per video."""
        cached = self._videos.get(v.id)
        if cached is None or cached[0] is not v:
            if len(self._videos) > 100_000:
                self._videos.clear()
            cached = self._videos[v.id] = (v, self._video(v))
        return cached[1]

    def _video(self, v: VideoRecord) -> pb.Video:
        out = pb.Video(
            name=video_name(self.collection_id_of(v.collection_id), v.id),
            kind=_KIND.get(v.kind, pb.MEDIA_KIND_UNSPECIFIED),
            sample_count=v.sample_count,
            size_bytes=v.size_bytes,
            content_sha256=v.content_sha256,
            state=pb.VIDEO_STATE_DAMAGED if v.state == "damaged" else pb.VIDEO_STATE_ACTIVE,
        )
        # the fields that an item or an image often leaves at their defaults are set only when not
        # (a default is not on the wire either way; passing each cost a one-vector item ~2.5 us)
        if v.external_key:
            out.external_key = v.external_key
        if v.labels:
            out.labels.update(v.labels)
        if v.duration:
            out.duration_seconds = v.duration
        if v.width or v.height:
            out.width, out.height = v.width, v.height
        if v.filename:
            out.filename = v.filename
        if v.model:
            out.model = v.model
        if v.realtime_factor:
            out.ingest_realtime_factor = v.realtime_factor
        if audio := self.audio_seconds(v.id):
            out.audio_seconds = audio
        _ts(out.create_time, v.create_time)
        return out

    def job(self, j: JobRecord) -> pb.IngestJob:
        out = pb.IngestJob(
            name=job_name(j.id),
            state=_JOB_STATE[j.state.value],
            collection=collection_name(self.collection_id_of(j.collection_id)),
            samples_done=j.samples_done,
            samples_total=j.samples_total,
            request_id=j.request_id,
        )
        if j.state.value == "SUCCEEDED":
            out.progress = 1.0
        elif j.samples_total:
            out.progress = min(1.0, j.samples_done / j.samples_total)
            elapsed = time.time() - j.create_time
            if j.samples_done and elapsed > 0:
                out.estimated_seconds_remaining = elapsed / j.samples_done * max(0, j.samples_total - j.samples_done)
        if j.video_id is not None and j.state.value == "SUCCEEDED":
            out.video = video_name(self.collection_id_of(j.collection_id), j.video_id)
        if j.state.value == "FAILED":
            out.error.CopyFrom(pb.JobError(code=j.error_code, reason=j.error_reason, message=j.error_message))
        _ts(out.create_time, j.create_time)
        _ts(out.update_time, j.update_time)
        return out

    def video_bytes(self, v: VideoRecord) -> bytes:
        """The serialised Video message of a video (cached like video())."""
        cached = self._video_bytes.get(v.id)
        if cached is None or cached[0] is not v:
            if len(self._video_bytes) > self.VIDEO_CACHE:
                self._video_bytes.clear()
            cached = self._video_bytes[v.id] = (v, self._video(v).SerializeToString())
        return cached[1]

    VIDEO_CACHE = 100_000

    def warm(self, videos: list[VideoRecord], stop=lambda: False) -> int:
        """Encode the Video messages of `videos` ahead of the searches that return them (each costs
        ~20 us the first time a search returns it), yielding the GIL between small batches (the
        server runs this after SERVING). Returns how many were encoded."""
        n = 0
        for v in videos[: self.VIDEO_CACHE]:
            if stop():
                break
            self.video_bytes(v)
            n += 1
            if n % 64 == 0:
                time.sleep(0)  # let the event loop take the GIL
        return n

    def hits_bytes(self, hits: list[Hit], model: str) -> bytes:
        """hits() already serialised, by the native front end's encoder (`_native.
        encode_search_response`: the search RPCs' hottest path, where protobuf objects cost more
        than the search; byte-identical to protobuf's, tests/server/test_fast_path.py); the search
        RPCs return these bytes, which their response serializer passes through (server.add_servicer)."""
        return _native.encode_search_response([(self.video_bytes(h.video), h.score, h.matches) for h in hits], model)

    def hits(self, hits: list[Hit], model: str) -> pb.SearchResponse:
        return pb.SearchResponse(
            model=model,
            hits=[
                pb.VideoHit(
                    video=self.video(h.video),
                    score=h.score,
                    matches=[pb.FrameMatch(timestamp_seconds=t, score=s) for t, s in h.matches],
                )
                for h in hits
            ],
        )

    def face_results(self, cid: str, results: list[QueryFace], face_model: str) -> pb.SearchByFaceResponse:
        out = pb.SearchByFaceResponse(face_model=face_model)

        def person(a) -> str:
            return person_name(cid, a.person) if a.person else ""

        for q in results:
            r = out.results.add(query_face=_face_box(q.box))
            for video, hit in q.hits:
                best = max(hit.appearances, key=lambda a: a.score)
                r.hits.add(
                    video=self.video(video),
                    score=hit.score,
                    timestamp_seconds=best.timestamp,
                    box=_face_box(best.box),
                    person=person(best),
                    person_display_name=best.person_name,
                    appearances=[
                        pb.FaceAppearance(
                            start_seconds=a.start,
                            end_seconds=a.end,
                            timestamp_seconds=a.timestamp,
                            box=_face_box(a.box),
                            score=a.score,
                            person=person(a),
                            person_display_name=a.person_name,
                        )
                        for a in hit.appearances
                    ],
                )
        return out

    def person(self, cid: str, p: PersonView) -> pb.Person:
        out = pb.Person(name=person_name(cid, p.id), display_name=p.display_name, video_count=p.video_count)
        for v, start, end in p.appearances:
            out.appearances.add(video=video_name(cid, v), start_seconds=start, end_seconds=end)
        if p.representative is not None:
            v, t, box = p.representative
            out.representative.CopyFrom(
                pb.FaceSighting(video=video_name(cid, v), timestamp_seconds=t, box=_face_box(box))
            )
        return out

    def copy(self, c: CopyMatch) -> pb.VideoCopyMatch:
        return pb.VideoCopyMatch(
            video=self.video(c.video),
            score=c.score,
            query_coverage=c.query_coverage,
            reference_coverage=c.reference_coverage,
            offset_seconds=c.offset,
            speed=c.speed,
            segments=[_aligned_segment(s) for s in c.segments],
            frame_score=c.frame_score or 0.0,
            audio_score=c.audio_score or 0.0,
            audio_segments=[_aligned_segment(s) for s in c.audio_segments],
        )

    def audio_match(self, h: AudioHit) -> pb.AudioMatch:
        m = h.match
        return pb.AudioMatch(
            video=self.video(h.video),
            score=m.score,
            query_start_seconds=m.query_start,
            reference_start_seconds=m.reference_start,
            duration_seconds=m.duration,
            offset_seconds=m.offset,
            bit_error_rate=m.ber,
        )

    def ingest(self, r: IngestResult) -> pb.IngestVideoResponse:
        out = pb.IngestVideoResponse(
            job=self.job(r.job), already_exists=r.already_exists, copies=[self.copy(c) for c in r.copies]
        )
        if r.video is not None:
            out.video.CopyFrom(self.video(r.video))
        return out


def metric(value: int) -> str:
    return METRIC_IN.get(value, f"unknown({value})")


def ingest_request(m: pb.IngestMetadata) -> IngestRequest:
    return IngestRequest(
        collection=parse_collection(m.parent),
        external_key=m.external_key,
        labels=dict(m.labels),
        request_id=m.request_id,
        filename=m.filename,
        server_path=m.server_path,
        size_bytes=m.size_bytes,
        duplicate_policy=_POLICY.get(m.duplicate_policy, "?"),
        duplicate_threshold=m.duplicate_threshold,
        return_job=m.return_job,
    )


def video_ids(names) -> list[tuple[str, int]]:
    return [parse_video(n, field="filter.videos") for n in names]


def search_options(o: pb.SearchOptions) -> SearchOptions:
    f = o.filter
    return SearchOptions(
        k=o.k,
        min_score=o.min_score if o.min_score else float("-inf"),
        max_matches_per_video=o.max_matches_per_video,
        ef=o.ef,
        labels=dict(f.labels),
        videos=video_ids(f.videos) if f.videos else [],
        exclude_videos=video_ids(f.exclude_videos) if f.exclude_videos else [],
    )


def _packed_values(vector: pb.ItemVector) -> bytes:
    """An ItemVector's `values` as their little-endian float32 bytes, sliced out of its wire form:
    field 1, packed, which protobuf writes first (b"" when it has none). Reading the repeated field
    into an array makes a Python float of every value (~3.5 us a 512-d vector, half of a
    one-vector item's parse)."""
    wire = vector.SerializeToString()
    if not wire or wire[0] != 0x0A:
        return b""
    n, at, shift = 0, 1, 0
    while True:  # the field's length, a varint
        byte = wire[at]
        n |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            break
        shift += 7
    return wire[at : at + n]


def item_batch(items, collection: str, dimension: int) -> ItemBatch:
    """An UpsertItems batch (repeated pb.Item) as the service takes it, by column (`collection`:
    the stream's collection id; `dimension`: its vectors' length, named in a mismatch error)."""
    keys, labels, video_ids, timestamps, rows, counts = [], [], [], [], [], []
    for i, item in enumerate(items):
        video_id = None
        if item.name:
            cid, video_id = parse_video(item.name, field="name")
            if cid != collection:
                raise invalid(f"item {item.name!r} is not in collections/{collection}", field="name")
        vecs = item.vectors
        rows += [_packed_values(v) for v in vecs]
        counts.append(len(vecs))
        stamped = [v.HasField("timestamp_seconds") for v in vecs]
        if any(stamped):
            if not all(stamped):
                raise invalid(
                    f"item {i}: give a timestamp for every vector of an item, or for none", field="timestamp_seconds"
                )
            timestamps.append(np.array([v.timestamp_seconds for v in vecs], dtype=np.float64))
        else:
            timestamps.append(None)
        keys.append(item.external_key)
        labels.append(dict(item.labels) if item.labels else {})
        video_ids.append(video_id)
    row_bytes = 4 * dimension
    if any(len(row) != row_bytes for row in rows):  # rows of another length
        at = next(r for r, row in enumerate(rows) if len(row) != row_bytes)
        item = int(np.searchsorted(np.cumsum(counts), at, side="right"))
        raise invalid(
            f"item {item}: vectors have {len(rows[at]) // 4} values; collection {collection!r} expects {dimension}",
            "DIMENSION_MISMATCH",
            expected=dimension,
            got=len(rows[at]) // 4,
        )
    vectors = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), dimension)
    return ItemBatch(vectors, np.cumsum(counts, dtype=np.int64), keys, labels, video_ids, timestamps)
