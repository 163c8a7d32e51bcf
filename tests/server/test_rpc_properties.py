"""Property tests over every RPC's request fields: arbitrary values for each field of each
frameseek.v1.FrameSeek request message (derived from the proto descriptors, so a field added to
the proto is covered without touching this file), sent to a real server process. Whatever the
input, the server must answer a status other than INTERNAL or UNKNOWN, every error must carry a
google.rpc.Status with an ErrorInfo reason, and the server must keep serving.

Hypothesis runs derandomized (the same examples on every run) and with small payloads, so the
whole file takes a minute or two. Next to the random search, a deterministic sweep puts each
special value into each field, one at a time (the issue-17 item-8 inputs this file found -- a
20 KB name, video ids `²` and of 20-23 digits -- among them)."""

from __future__ import annotations

import string

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frameseek.v1 import frameseek_pb2 as pb

from .helpers import ServerProcess, needs_index, seed_collection

pytestmark = needs_index

SERVICE = pb.DESCRIPTOR.services_by_name["FrameSeek"]
DIM, VIDEOS, SAMPLES = 8, 3, 4
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# Strings that mean something to the server, next to arbitrary text: resource names with odd ids
# (non-ASCII digits, superscripts, 23 digits, negative), NUL bytes, paths, page tokens, long names.
ODD_IDS = ["1", "0", "-1", "١", "²", "1" * 23, "99999999999999999999", "1.5", "", "abc"]
LONG_NAME = "x" * 9000
SPECIAL_STRINGS = (
    [
        "",
        "default",
        "vecs",
        "collections/vecs",
        "collections/default",
        "collections/",
        "collections/a/b",
        "/etc/passwd",
        "/tmp/x\x00y",
        "v:abc",
        "v:1",
        "garbage!",
        "ingestJobs/nope",
        LONG_NAME,
    ]
    + [f"collections/vecs/videos/{i}" for i in ODD_IDS]
    + [f"collections/default/videos/{i}" for i in ODD_IDS]
    + [f"ingestJobs/{i}" for i in ODD_IDS]
)

# Special values known to fail, with why, in any field that takes them: left out of the random
# search, their failures in the sweep tolerated. Empty: the item-8 ones (issue 17) are fixed.
KNOWN_ITEM8: dict[str, str] = {}
TEXT = st.one_of(
    st.sampled_from([s for s in SPECIAL_STRINGS if s not in KNOWN_ITEM8]),
    st.text(max_size=24),
    st.text(alphabet=string.ascii_lowercase + string.digits + "-/:", max_size=24),
)

INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(field: d.FieldDescriptor) -> st.SearchStrategy:
    t = field.type
    if t in INT_RANGES:
        lo, hi = INT_RANGES[t]
        return st.one_of(st.sampled_from([0, 1, -1 if lo < 0 else 2, lo, hi]), st.integers(lo, hi))
    if t == d.FieldDescriptor.TYPE_ENUM:  # unknown values too: proto3 enums are open
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-(2**31), 2**31 - 1))
    if t == d.FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == d.FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_STRING:
        return TEXT
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def message(desc: d.Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Any message of this type: each field absent or set to an arbitrary value, at most one member
    of each oneof, repeated fields and maps with a few entries, nested messages 3 levels deep."""
    cls = message_factory.GetMessageClass(desc)
    parts = {}
    for f in desc.fields:
        if f.message_type is not None and depth >= 3:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key, value = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            parts[f.name] = st.dictionaries(
                scalar(key),
                scalar(value) if value.message_type is None else message(value.message_type, depth + 1),
                max_size=2,
            )
        else:
            one = scalar(f) if f.message_type is None else message(f.message_type, depth + 1)
            parts[f.name] = st.lists(one, max_size=3) if f.is_repeated else one
    oneof_of = {f.name: f.containing_oneof.name for f in desc.fields if f.containing_oneof is not None}

    @st.composite
    def build(draw):
        msg = cls()
        chosen_oneofs = set()
        for name in draw(st.permutations(sorted(parts))):
            if not draw(st.booleans()):
                continue
            oneof = oneof_of.get(name)
            if oneof in chosen_oneofs:
                continue
            chosen_oneofs.add(oneof)
            value = draw(parts[name])
            target = getattr(msg, name)
            if isinstance(value, dict):
                for k, v in value.items():
                    if hasattr(v, "SerializeToString"):
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif isinstance(value, list):
                if value and hasattr(value[0], "SerializeToString"):
                    for v in value:
                        target.add().CopyFrom(v)
                else:
                    target.extend(value)
            elif hasattr(value, "SerializeToString"):
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return build()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A collection 'vecs' of a few videos of known vectors (no model needed for it), served by the
    default front end (the native one answers SearchByVector)."""
    data = tmp_path_factory.mktemp("props") / "data"
    index = {"m": 16, "ef_construction": 100, "ef_search": 64}
    seed_collection(
        data,
        dim=DIM,
        videos=VIDEOS,
        samples=SAMPLES,
        seed=1,
        spacing=0.5,
        index=index,
        labels=lambda i: {"k": str(i)},
    )
    srv = ServerProcess(data).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def call(channel: grpc.Channel, method: d.MethodDescriptor, requests: list) -> None:
    """One RPC with these request messages (one for a unary request); raises grpc.RpcError."""
    path = f"/{SERVICE.full_name}/{method.name}"
    out = message_factory.GetMessageClass(method.output_type)
    kw = dict(request_serializer=lambda m: m.SerializeToString(), response_deserializer=out.FromString)
    # a generous deadline only so that a hang fails this test instead of the whole run
    if method.client_streaming and not method.server_streaming:
        channel.stream_unary(path, **kw)(iter(requests), timeout=120)
    elif method.server_streaming:
        stream = (channel.stream_stream if method.client_streaming else channel.unary_stream)(path, **kw)
        for _ in stream(iter(requests) if method.client_streaming else requests[0], timeout=120):
            pass
    else:
        channel.unary_unary(path, **kw)(requests[0], timeout=120)


def check_answer(server: ServerProcess, channel: grpc.Channel, method: d.MethodDescriptor, requests: list) -> None:
    try:
        call(channel, method, requests)
    except grpc.RpcError as err:
        code = err.code()
        assert code not in FORBIDDEN, f"{method.name}({requests!r}) -> {code.name}: {err.details()}"
        assert code != grpc.StatusCode.UNAVAILABLE or server.proc.poll() is None, (
            f"{method.name}({requests!r}) ended the server:\n{server.log()[-3000:]}"
        )
        if code != grpc.StatusCode.DEADLINE_EXCEEDED:
            status = rpc_status.from_call(err)
            assert status is not None, f"{method.name}({requests!r}) -> {code.name} without google.rpc.Status"
            infos = [x for x in status.details if x.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
            assert infos, f"{method.name}({requests!r}) -> {code.name} without ErrorInfo: {err.details()}"
    assert server.proc.poll() is None, f"{method.name}({requests!r}) ended the server:\n{server.log()[-3000:]}"


# Deterministic next to the random search: each special value in each field, one at a time.
SPECIAL_NUMBERS = {
    "int": [-1, 0, 2**31 - 1, -(2**31), 99],
    "float": [float("nan"), float("inf"), -float("inf"), -1.0, 1e30],
}


def leaf_fields(desc: d.Descriptor, prefix: tuple = (), depth: int = 0):
    """(path of field names, leaf field) for every scalar field, nested messages included."""
    for f in desc.fields:
        if f.message_type is not None:
            if depth < 3 and not f.message_type.GetOptions().map_entry:
                yield from leaf_fields(f.message_type, prefix + (f.name,), depth + 1)
        else:
            yield prefix + (f.name,), f


def special_values(f: d.FieldDescriptor) -> list:
    if f.type == d.FieldDescriptor.TYPE_STRING:
        return SPECIAL_STRINGS
    if f.type in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
        return SPECIAL_NUMBERS["float"]
    if f.type in INT_RANGES or f.type == d.FieldDescriptor.TYPE_ENUM:
        lo, hi = INT_RANGES.get(f.type, (-(2**31), 2**31 - 1))
        return [v for v in SPECIAL_NUMBERS["int"] if lo <= v <= hi]
    if f.type == d.FieldDescriptor.TYPE_BYTES:
        return [b"", b"\x00" * 16, b"GIF89a", b"\x1a\x45\xdf\xa3"]
    return [True, False]


def with_field(desc: d.Descriptor, path: tuple, field: d.FieldDescriptor, value):
    msg = message_factory.GetMessageClass(desc)()
    target = msg
    for name in path[:-1]:
        sub = getattr(target, name)
        target = sub.add() if hasattr(sub, "add") else sub
    if path[-1] != "parent" and "parent" in target.DESCRIPTOR.fields_by_name:
        target.parent = "collections/vecs"  # a collection that holds videos, so the value gets looked at
    if field.is_repeated:
        getattr(target, path[-1]).append(value)
    else:
        setattr(target, path[-1], value)
    return msg


RPCS = [m.name for m in SERVICE.methods]


@pytest.mark.parametrize("rpc", RPCS)
def test_any_request_gets_a_proper_status_and_the_server_keeps_serving(server, channel, rpc):
    method = SERVICE.methods_by_name[rpc]
    one = message(method.input_type)
    requests = st.lists(one, min_size=1, max_size=3) if method.client_streaming else one.map(lambda m: [m])

    @settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests)
    def prop(reqs):
        check_answer(server, channel, method, reqs)

    prop()
    # still serving: a plain read answers
    channel.unary_unary(
        f"/{SERVICE.full_name}/GetStats",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=pb.Stats.FromString,
    )(pb.GetStatsRequest(), timeout=60)


@pytest.mark.parametrize("rpc", RPCS)
def test_each_special_value_in_each_field_gets_a_proper_status(server, channel, rpc):
    method = SERVICE.methods_by_name[rpc]
    failures = []
    for path, field in leaf_fields(method.input_type):
        for value in special_values(field):
            request = with_field(method.input_type, path, field, value)
            try:
                check_answer(server, channel, method, [request])
            except AssertionError as e:
                if value in KNOWN_ITEM8:
                    continue
                answer = str(e).split(") -> ", 1)[-1].splitlines()[0]
                failures.append(f"{'.'.join(path)} = {value!r:.60} -> {answer:.120}")
    assert not failures, f"{rpc}: INTERNAL/UNKNOWN or no ErrorInfo for " + "; ".join(failures)
