"""The one mapping from domain errors to gRPC: status code, message, and a google.rpc.Status with
an ErrorInfo detail (reason, domain, metadata) in the `grpc-status-details-bin` trailer."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ..errors import DOMAIN, ErrorCode, JobRef, ServiceError, VideoRef
from .names import job_name, video_name

#: ErrorCode -> grpc.StatusCode (both use google.rpc.Code's names and numbers)
GRPC_CODES = {code: grpc.StatusCode[code.name] for code in ErrorCode}


def grpc_code(code: ErrorCode) -> grpc.StatusCode:
    return GRPC_CODES[code]


def metadata(err: ServiceError) -> dict[str, str]:
    """ErrorInfo.metadata: resources as their names."""
    out = {}
    for k, v in err.metadata.items():
        if isinstance(v, VideoRef):
            v = video_name(v.collection, v.video_id)
        elif isinstance(v, JobRef):
            v = job_name(v.job_id)
        out[k] = v
    return out


def rich_status(err: ServiceError) -> tuple[tuple[str, bytes], ...]:
    st = status_pb2.Status(code=int(err.code), message=err.message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=metadata(err)))
    st.details.append(detail)
    return (("grpc-status-details-bin", st.SerializeToString()),)


async def abort(context, err: ServiceError) -> None:
    """End the call with `err` (raises grpc.aio.AbortError, as context.abort does)."""
    await context.abort(grpc_code(err.code), err.message, trailing_metadata=rich_status(err))
