/**
 * A small typed client for the frameseek gRPC API (frameseek.v1) on @grpc/grpc-js.
 *
 * It wraps the ts-proto stubs in ../gen (usable directly through `client.api`) with what every
 * caller would otherwise write: insecure/TLS channels with a bearer token, promise-returning
 * calls that throw FrameSeekError (gRPC code + the server's ErrorInfo reason), uploads streamed
 * in chunks of at most 1 MiB with back-pressure, searches by image / video / vector, and async
 * iterators over the paginated List methods.
 */
import { createReadStream, readFileSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";

import {
  Collection,
  type DeepPartial,
  FrameSeekClient,
  IngestJob,
  IngestMetadata,
  IngestVideoResponse,
  ListVideosRequest,
  type FaceBox,
  type Person,
  SearchByFaceResponse,
  SearchByVideoResponse,
  SearchOptions,
  SearchResponse,
  Stats,
  Video,
  VideoQuery,
} from "../gen/frameseek/v1/frameseek";
import { toFrameSeekError } from "./errors";

/** The largest chunk the server accepts in IngestVideo / SearchByVideo streams. */
export const MAX_CHUNK_SIZE = 1 << 20;
/** Resource name of the server's default collection. */
export const DEFAULT_COLLECTION = "collections/default";
const SERVICE = "frameseek.v1.FrameSeek";

export interface ConnectOptions {
  /** Plaintext (loopback, development, behind a trusted proxy). Exactly one of insecure / tls. */
  insecure?: boolean;
  /** TLS; `{}` verifies the server against the system roots. */
  tls?: { rootCerts?: Buffer; privateKey?: Buffer; certChain?: Buffer };
  /** Sent as "authorization: Bearer <token>" with every call. */
  token?: string;
  /** Allow `token` over a plaintext channel (anyone on the path can read it). */
  allowInsecureToken?: boolean;
  /** Upload chunk size in bytes (default and maximum MAX_CHUNK_SIZE). */
  chunkSize?: number;
  /** Extra grpc-js channel options (e.g. "grpc.keepalive_time_ms"). */
  channelOptions?: grpc.ClientOptions;
}

/** TLS material from PEM files: `ca` (trust it instead of the system roots) and, for a server
 * that requires client certificates (--tls-client-ca), `cert` + `key`. */
export function tlsFromFiles(files: { ca?: string; cert?: string; key?: string }): NonNullable<ConnectOptions["tls"]> {
  if (!!files.cert !== !!files.key) throw new Error("frameseek: a client certificate needs both cert and key");
  return {
    rootCerts: files.ca ? readFileSync(files.ca) : undefined,
    certChain: files.cert ? readFileSync(files.cert) : undefined,
    privateKey: files.key ? readFileSync(files.key) : undefined,
  };
}

/** The connection settings the frameseek CLI reads from the environment, where set:
 * FRAMESEEK_TLS_CA / FRAMESEEK_CLIENT_CERT / FRAMESEEK_CLIENT_KEY (TLS, as tlsFromFiles) and
 * FRAMESEEK_TOKEN. Spread it into ConnectOptions: `new FrameSeek(addr, { ...optionsFromEnv() })`. */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<ConnectOptions> {
  const out: Partial<ConnectOptions> = {};
  const [ca, cert, key] = [env.FRAMESEEK_TLS_CA, env.FRAMESEEK_CLIENT_CERT, env.FRAMESEEK_CLIENT_KEY];
  if (ca || cert || key) out.tls = tlsFromFiles({ ca, cert, key });
  if (env.FRAMESEEK_TOKEN) out.token = env.FRAMESEEK_TOKEN;
  return out;
}

/** Anything an upload can read from. */
export type ByteSource = Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

type Callback<T> = (err: grpc.ServiceError | null, res: T) => void;

/** Calls a grpc-js unary method and turns its callback into a promise of the response. */
function unary<Req, Res>(fn: (req: Req, md: grpc.Metadata, opts: Partial<grpc.CallOptions>, cb: Callback<Res>) => unknown,
  req: Req, opts: Partial<grpc.CallOptions> = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, new grpc.Metadata(), opts, (err, res) => (err ? reject(toFrameSeekError(err)) : resolve(res)));
  });
}

/** Re-slices any byte source into chunks of at most `size` bytes. */
export async function* chunked(source: ByteSource, size: number): AsyncGenerator<Uint8Array> {
  const parts: AsyncIterable<Uint8Array> | Iterable<Uint8Array> = source instanceof Uint8Array ? [source] : source;
  for await (const part of parts) {
    for (let off = 0; off < part.length; off += size) {
      yield part.subarray(off, Math.min(off + size, part.length));
    }
  }
}

/** Writes messages to a client stream honouring back-pressure, then ends it. */
async function writeAll<T>(call: grpc.ClientWritableStream<T>, messages: AsyncIterable<T>): Promise<void> {
  for await (const m of messages) {
    if (call.destroyed || (call as unknown as { writableEnded?: boolean }).writableEnded) return;
    if (!call.write(m)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          call.off("drain", done);
          call.off("close", done);
          resolve();
        };
        call.on("drain", done);
        call.on("close", done);
      });
    }
  }
  call.end();
}

// grpc.health.v1.Health/Check, encoded by hand: the two one-field messages are frozen and this
// avoids generating the health protos for one call.
const healthCheck = {
  path: "/grpc.health.v1.Health/Check",
  requestStream: false,
  responseStream: false,
  requestSerialize: (service: string) => Buffer.from(new BinaryWriter().uint32(10).string(service).finish()),
  requestDeserialize: (b: Buffer) => new BinaryReader(b).string(),
  responseSerialize: (s: number) => Buffer.from(new BinaryWriter().uint32(8).int32(s).finish()),
  responseDeserialize: (b: Buffer): number => {
    const r = new BinaryReader(b);
    let status = 0;
    while (r.pos < r.len) {
      const [f, w] = r.tag();
      if (f === 1 && w === 0) status = r.int32();
      else r.skip(w);
    }
    return status;
  },
};
/** grpc.health.v1 HealthCheckResponse.ServingStatus values. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

export class FrameSeek {
  /** The generated stub, for calls and options the wrapper does not cover. */
  readonly api: FrameSeekClient;
  private readonly chunkSize: number;

  constructor(readonly target: string, options: ConnectOptions) {
    const { insecure, tls, token, allowInsecureToken, chunkSize = MAX_CHUNK_SIZE, channelOptions = {} } = options;
    if (!!insecure === !!tls) throw new Error("frameseek: pass exactly one of {insecure: true} or {tls: {...}}");
    if (!(chunkSize > 0 && chunkSize <= MAX_CHUNK_SIZE)) {
      throw new Error(`frameseek: chunkSize ${chunkSize} outside 1..${MAX_CHUNK_SIZE}`);
    }
    this.chunkSize = chunkSize;
    let creds = tls
      ? grpc.credentials.createSsl(tls.rootCerts ?? null, tls.privateKey ?? null, tls.certChain ?? null)
      : grpc.credentials.createInsecure();
    const clientOptions: grpc.ClientOptions = {
      "grpc.max_receive_message_length": 64 << 20,
      ...channelOptions,
    };
    if (token) {
      const header = `Bearer ${token}`;
      if (tls) {
        creds = grpc.credentials.combineChannelCredentials(creds, grpc.credentials.createFromMetadataGenerator(
          (_params, cb) => {
            const md = new grpc.Metadata();
            md.set("authorization", header);
            cb(null, md);
          }));
      } else if (!allowInsecureToken) {
        throw new Error("frameseek: a token over a plaintext channel needs allowInsecureToken: true");
      } else {
        // grpc-js refuses call credentials on insecure channels; an interceptor adds the header.
        const addToken: grpc.Interceptor = (opts, next) => new grpc.InterceptingCall(next(opts), {
          start(metadata, listener, nextStart) {
            metadata.set("authorization", header);
            nextStart(metadata, listener);
          },
        });
        clientOptions.interceptors = [...(clientOptions.interceptors ?? []), addToken];
      }
    }
    this.api = new FrameSeekClient(target, creds, clientOptions);
  }

  /** Closes the channel. */
  close(): void {
    this.api.close();
  }

  /** grpc.health.v1 status of the FrameSeek service (ServingStatus value). */
  health(service = SERVICE): Promise<number> {
    return new Promise((resolve, reject) => {
      this.api.makeUnaryRequest(healthCheck.path, healthCheck.requestSerialize, healthCheck.responseDeserialize, service,
        (err, res) => (err ? reject(toFrameSeekError(err)) : resolve(res ?? 0)));
    });
  }

  /** Polls health until the service is SERVING (it answers NOT_SERVING while loading its index). */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 20;
    let last: unknown = "no answer";
    for (;;) {
      try {
        const s = await this.health();
        if (s === ServingStatus.SERVING) return;
        last = `status ${s}`;
      } catch (err) {
        last = err;
      }
      if (Date.now() >= deadline) throw new Error(`frameseek: server at ${this.target} not ready: ${String(last)}`);
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
  }

  stats(): Promise<Stats> {
    return unary(this.api.getStats.bind(this.api), {});
  }

  createCollection(collectionId: string, collection: DeepPartial<Collection> = {}): Promise<Collection> {
    return unary(this.api.createCollection.bind(this.api), { collectionId, collection: Collection.fromPartial(collection) });
  }

  getCollection(name: string): Promise<Collection> {
    return unary(this.api.getCollection.bind(this.api), { name });
  }

  async deleteCollection(name: string, force = false): Promise<void> {
    await unary(this.api.deleteCollection.bind(this.api), { name, force });
  }

  /** Every collection, fetching pages of `pageSize` (0 = server default). */
  async *collections(pageSize = 0): AsyncGenerator<Collection> {
    let pageToken = "";
    do {
      const page = await unary(this.api.listCollections.bind(this.api), { pageSize, pageToken });
      yield* page.collections;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Every video a ListVideosRequest selects (default: the default collection); pages are fetched lazily. */
  async *videos(request: DeepPartial<ListVideosRequest> = {}): AsyncGenerator<Video> {
    const req = ListVideosRequest.fromPartial(request);
    do {
      const page = await unary(this.api.listVideos.bind(this.api), req);
      yield* page.videos;
      req.pageToken = page.nextPageToken;
    } while (req.pageToken);
  }

  getVideo(name: string): Promise<Video> {
    return unary(this.api.getVideo.bind(this.api), { name });
  }

  /** Deletes a video; it is gone from every search when the promise resolves. */
  async deleteVideo(name: string): Promise<void> {
    await unary(this.api.deleteVideo.bind(this.api), { name });
  }

  /**
   * Ingests media: one metadata message, then chunks of at most `chunkSize` bytes. Resolves when
   * the video is durably indexed (or, with `returnJob`, once the upload is stored).
   */
  upload(source: ByteSource, metadata: DeepPartial<IngestMetadata> = {}, opts: Partial<grpc.CallOptions> = {}): Promise<IngestVideoResponse> {
    const size = this.chunkSize;
    return this.clientStream<IngestVideoResponse, { metadata?: IngestMetadata; chunk?: Buffer }>(
      (cb) => this.api.ingestVideo(new grpc.Metadata(), opts, cb),
      (async function* () {
        yield { metadata: IngestMetadata.fromPartial(metadata) };
        for await (const c of chunked(source, size)) yield { chunk: Buffer.from(c.buffer, c.byteOffset, c.length) };
      })());
  }

  /** Ingests a file; `filename` and `sizeBytes` default to the file's. */
  async uploadFile(path: string, metadata: DeepPartial<IngestMetadata> = {}, opts: Partial<grpc.CallOptions> = {}): Promise<IngestVideoResponse> {
    const { size } = await stat(path);
    return this.upload(createReadStream(path, { highWaterMark: this.chunkSize }),
      { filename: basename(path), sizeBytes: size, ...metadata }, opts);
  }

  /** Ingests an encoded still image as a one-sample item. */
  ingestImage(image: Uint8Array, metadata: DeepPartial<IngestMetadata> = {}): Promise<IngestVideoResponse> {
    return unary(this.api.ingestImage.bind(this.api), { image: Buffer.from(image), metadata: IngestMetadata.fromPartial(metadata) });
  }

  /** The job's state at once, then every change, until a terminal state. */
  async *watchIngestJob(name: string): AsyncGenerator<IngestJob> {
    const call = this.api.watchIngestJob({ name });
    try {
      for await (const job of call) yield job as IngestJob;
    } catch (err) {
      throw toFrameSeekError(err);
    } finally {
      call.cancel();
    }
  }

  /** Videos containing an encoded image, best first, with their best timestamps. */
  searchByImage(image: Uint8Array, options: DeepPartial<SearchOptions> = {}, parent = ""): Promise<SearchResponse> {
    return unary(this.api.searchByImage.bind(this.api), { parent, image: Buffer.from(image), options: SearchOptions.fromPartial(options) });
  }

  async searchByImageFile(path: string, options: DeepPartial<SearchOptions> = {}, parent = ""): Promise<SearchResponse> {
    return this.searchByImage(await readFile(path), options, parent);
  }

  /** Nearest videos for a raw embedding of the collection's model. */
  searchByVector(vector: ArrayLike<number>, options: DeepPartial<SearchOptions> = {}, parent = ""): Promise<SearchResponse> {
    return unary(this.api.searchByVector.bind(this.api), { parent, vector: Array.from(vector), options: SearchOptions.fromPartial(options) });
  }

  /** Where the person of a photo appears (collections created with `faces`): per face of the
   * photo, or only the one inside `face` (pixels). */
  searchByFace(image: Uint8Array, options: DeepPartial<SearchOptions> = {}, parent = "", face?: FaceBox): Promise<SearchByFaceResponse> {
    return unary(this.api.searchByFace.bind(this.api), { parent, image: Buffer.from(image), face, options: SearchOptions.fromPartial(options) });
  }

  /** Every person of a faces collection (all pages). */
  async *listPeople(parent = "", pageSize = 0): AsyncGenerator<Person> {
    let pageToken = "";
    do {
      const page = await unary(this.api.listPeople.bind(this.api), { parent, pageSize, pageToken });
      yield* page.people;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The persons in one video (`collections/{c}/videos/{v}`), with their intervals there. */
  async videoPeople(name: string): Promise<Person[]> {
    return (await unary(this.api.getVideoPeople.bind(this.api), { name })).people;
  }

  /** Names a person (`collections/{c}/people/{p}`). */
  updatePerson(name: string, displayName: string): Promise<Person> {
    return unary(this.api.updatePerson.bind(this.api), { person: { name, displayName, videoCount: 0, appearances: [] } });
  }

  /** Indexed videos a clip copies, with score, coverage, offset and aligned segments. */
  searchByVideo(source: ByteSource, query: DeepPartial<VideoQuery> = {}, opts: Partial<grpc.CallOptions> = {}): Promise<SearchByVideoResponse> {
    const size = this.chunkSize;
    return this.clientStream<SearchByVideoResponse, { query?: VideoQuery; chunk?: Buffer }>(
      (cb) => this.api.searchByVideo(new grpc.Metadata(), opts, cb),
      (async function* () {
        yield { query: VideoQuery.fromPartial(query) };
        for await (const c of chunked(source, size)) yield { chunk: Buffer.from(c.buffer, c.byteOffset, c.length) };
      })());
  }

  searchByVideoFile(path: string, query: DeepPartial<VideoQuery> = {}, opts: Partial<grpc.CallOptions> = {}): Promise<SearchByVideoResponse> {
    return this.searchByVideo(createReadStream(path, { highWaterMark: this.chunkSize }), query, opts);
  }

  /**
   * Runs a client-streaming call. The server may end the call early (e.g. INVALID_ARGUMENT on
   * the first chunk); its status wins over any write error, and a failing source cancels the call.
   */
  private clientStream<Res, Msg>(start: (cb: Callback<Res>) => grpc.ClientWritableStream<Msg>, messages: AsyncIterable<Msg>): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      let settled = false;
      const call = start((err, res) => {
        settled = true;
        if (err) reject(toFrameSeekError(err));
        else resolve(res);
      });
      writeAll(call, messages).catch((err) => {
        if (!settled) {
          settled = true;
          call.cancel();
          reject(err);
        }
      });
    });
  }
}
