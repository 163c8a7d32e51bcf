/**
 * Server errors: the gRPC status plus the google.rpc.ErrorInfo the server attaches in the
 * `grpc-status-details-bin` trailer (a serialized google.rpc.Status).
 *
 * google.rpc.Status and ErrorInfo are decoded with @bufbuild/protobuf's wire reader instead of
 * generated code: the frameseek protos deliberately import no googleapis protos, and these two
 * messages are small and frozen (google/rpc/status.proto, google/rpc/error_details.proto).
 */
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { status as Status, type ServiceError } from "@grpc/grpc-js";

/** google.rpc.ErrorInfo domain of the server's errors. */
export const ERROR_DOMAIN = "frameseek.dev";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";

/** A failed call: gRPC code and message plus the server's machine-readable reason. */
export class FrameSeekError extends Error {
  /** gRPC status code (e.g. status.INVALID_ARGUMENT). */
  readonly code: Status;
  /** ErrorInfo.reason, e.g. "CORRUPT_MEDIA" or "DIMENSION_MISMATCH"; "" when the server sent none. */
  readonly reason: string;
  /** ErrorInfo.domain ("frameseek.dev" for the server's own errors). */
  readonly domain: string;
  /** ErrorInfo.metadata, e.g. {field: "vector"}. */
  readonly metadata: Record<string, string>;
  /** The server's message without the "CODE: " prefix grpc-js adds. */
  readonly details: string;

  constructor(err: ServiceError) {
    super(err.message);
    this.name = "FrameSeekError";
    this.code = err.code;
    this.details = err.details;
    const info = errorInfoOf(err);
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = info?.metadata ?? {};
  }
}

interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

function errorInfoOf(err: ServiceError): ErrorInfo | undefined {
  const raw = err.metadata?.get("grpc-status-details-bin")?.[0];
  if (!raw || typeof raw === "string") return undefined;
  try {
    for (const any of decodeStatusDetails(raw)) {
      if (any.typeUrl === ERROR_INFO_TYPE) return decodeErrorInfo(any.value);
    }
  } catch {
    // A malformed trailer must not hide the status itself.
  }
  return undefined;
}

/** google.rpc.Status: 1 code, 2 message, 3 repeated google.protobuf.Any details. */
function decodeStatusDetails(buf: Uint8Array): { typeUrl: string; value: Uint8Array }[] {
  const r = new BinaryReader(buf);
  const out: { typeUrl: string; value: Uint8Array }[] = [];
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 3 && wireType === 2) {
      const any = new BinaryReader(r.bytes());
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1 && w === 2) typeUrl = any.string();
        else if (f === 2 && w === 2) value = any.bytes();
        else any.skip(w);
      }
      out.push({ typeUrl, value });
    } else {
      r.skip(wireType);
    }
  }
  return out;
}

/** google.rpc.ErrorInfo: 1 reason, 2 domain, 3 map<string, string> metadata. */
function decodeErrorInfo(buf: Uint8Array): ErrorInfo {
  const r = new BinaryReader(buf);
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === 2) info.reason = r.string();
    else if (field === 2 && wireType === 2) info.domain = r.string();
    else if (field === 3 && wireType === 2) {
      const entry = new BinaryReader(r.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, w] = entry.tag();
        if (f === 1 && w === 2) key = entry.string();
        else if (f === 2 && w === 2) value = entry.string();
        else entry.skip(w);
      }
      info.metadata[key] = value;
    } else r.skip(wireType);
  }
  return info;
}

/** Wraps grpc-js ServiceErrors (anything with a numeric `code` and `metadata`) into FrameSeekError. */
export function toFrameSeekError(err: unknown): unknown {
  if (err && typeof err === "object" && "code" in err && "metadata" in err && !(err instanceof FrameSeekError)) {
    return new FrameSeekError(err as ServiceError);
  }
  return err;
}
