import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";

import {
  chunked, DEFAULT_COLLECTION, ERROR_DOMAIN, FrameSeek, FrameSeekError, MAX_CHUNK_SIZE, optionsFromEnv, ServingStatus,
  tlsFromFiles,
} from "../src";
import { IngestJobState, MediaKind } from "../gen/frameseek/v1/frameseek";
import { embedWithServerModel, skipReason, startServer, type TestServer } from "./server";

async function rejectsWith(p: Promise<unknown>, code: status, reasons: string[]): Promise<FrameSeekError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof FrameSeekError, `not a FrameSeekError: ${String(err)}`);
    assert.equal(err.code, code, `code ${status[err.code]} (${err.details}), want ${status[code]}`);
    assert.ok(reasons.includes(err.reason), `reason "${err.reason}" not in ${reasons.join(",")}`);
    assert.equal(err.domain, ERROR_DOMAIN);
    return err;
  }
  assert.fail(`expected ${status[code]}`);
}

describe("wrapper (no server)", () => {
  test("needs exactly one transport", () => {
    assert.throws(() => new FrameSeek("127.0.0.1:1", {}), /exactly one/);
    assert.throws(() => new FrameSeek("127.0.0.1:1", { insecure: true, tls: {} }), /exactly one/);
  });
  test("token over plaintext needs opt-in", () => {
    assert.throws(() => new FrameSeek("127.0.0.1:1", { insecure: true, token: "t" }), /allowInsecureToken/);
    new FrameSeek("127.0.0.1:1", { insecure: true, token: "t", allowInsecureToken: true }).close();
    new FrameSeek("127.0.0.1:1", { tls: {}, token: "t" }).close();
  });
  test("chunk size bounds", () => {
    for (const n of [0, -1, MAX_CHUNK_SIZE + 1]) assert.throws(() => new FrameSeek("x:1", { insecure: true, chunkSize: n }));
  });
  test("chunked re-slices any source", async () => {
    const parts = [new Uint8Array(7).fill(1), new Uint8Array(0), new Uint8Array(25).fill(2)];
    const out: Uint8Array[] = [];
    for await (const c of chunked(parts, 10)) out.push(c);
    assert.deepEqual(out.map((c) => c.length), [7, 10, 10, 5]);
    assert.equal(Buffer.concat(out).compare(Buffer.concat(parts)), 0);
    const one: number[] = [];
    for await (const c of chunked(new Uint8Array(MAX_CHUNK_SIZE * 2 + 1), MAX_CHUNK_SIZE)) one.push(c.length);
    assert.deepEqual(one, [MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, 1]);
  });
});

describe("against a live server", { skip: skipReason }, () => {
  let srv: TestServer;
  let c: FrameSeek;
  before(async () => {
    srv = await startServer();
    c = new FrameSeek(srv.address, { insecure: true, chunkSize: 64 << 10 }); // small chunks: many messages
  });
  after(async () => {
    c?.close();
    await srv?.stop();
  });

  test("health and stats", async () => {
    assert.equal(await c.health(), ServingStatus.SERVING);
    const st = await c.stats();
    assert.ok(st.version && st.uptimeSeconds > 0 && st.simdLevel, JSON.stringify(st));
  });

  test("calls carry a token", async () => {
    const t = new FrameSeek(srv.address, { insecure: true, token: "tok-123", allowInsecureToken: true });
    try {
      assert.ok((await t.stats()).version);
    } finally {
      t.close();
    }
  });

  test("collections: create, paginate, errors", async () => {
    const ids = ["ts-pages-a", "ts-pages-b", "ts-pages-c", "ts-pages-d", "ts-pages-e"];
    for (const id of ids) {
      const col = await c.createCollection(id, { description: `ts test ${id}` });
      assert.equal(col.name, `collections/${id}`);
      assert.ok(col.dimension > 0);
    }
    await rejectsWith(c.createCollection(ids[0]), status.ALREADY_EXISTS, ["COLLECTION_EXISTS"]);
    const names: string[] = [];
    for await (const col of c.collections(2)) names.push(col.name);
    assert.deepEqual(names, [...names].sort(), "name order");
    assert.equal(new Set(names).size, names.length, "no duplicates across pages");
    for (const id of ["default", ...ids]) assert.ok(names.includes(`collections/${id}`), `${id} missing from ${names}`);
    await c.deleteCollection(`collections/${ids[4]}`);
    const err = await rejectsWith(c.getCollection(`collections/${ids[4]}`), status.NOT_FOUND, ["COLLECTION_NOT_FOUND"]);
    assert.match(err.details, /ts-pages-e/);
    await rejectsWith(c.deleteCollection(DEFAULT_COLLECTION, true), status.FAILED_PRECONDITION, ["DEFAULT_COLLECTION"]);
    // An error while iterating is thrown from the loop.
    await rejectsWith((async () => {
      for await (const v of c.videos({ parent: "collections/no-such-collection" })) assert.fail(`got ${v.name}`);
    })(), status.NOT_FOUND, ["COLLECTION_NOT_FOUND"]);
    for (const id of ids.slice(0, 4)) await c.deleteCollection(`collections/${id}`, true);
  });

  test("vector search validation", async () => {
    const { dimension } = await c.getCollection(DEFAULT_COLLECTION);
    await rejectsWith(c.searchByVector(new Array(dimension + 1).fill(0)), status.INVALID_ARGUMENT, ["DIMENSION_MISMATCH"]);
    const v = new Array(dimension).fill(0.1);
    v[3] = NaN;
    await rejectsWith(c.searchByVector(v), status.INVALID_ARGUMENT, ["NON_FINITE_VECTOR"]);
  });

  test("non-media upload is refused, the server keeps serving", async () => {
    await rejectsWith(c.upload(Buffer.alloc(300_000, "not a video "), { filename: "junk.mp4" }), status.INVALID_ARGUMENT,
      ["NOT_MEDIA", "CORRUPT_MEDIA"]);
    assert.ok((await c.stats()).version);
  });

  test("ingest job: return_job + watch until SUCCEEDED; image ingest", async (t) => {
    const parent = "collections/ts-jobs";
    await c.createCollection("ts-jobs");
    try {
      let res;
      try {
        res = await c.uploadFile(srv.media("b.mp4"), { parent, returnJob: true });
      } catch (err) {
        if (err instanceof FrameSeekError && err.reason === "MODEL_UNAVAILABLE") {
          t.skip(`server has no embedding model: ${err.details}`);
          return;
        }
        throw err;
      }
      assert.ok(res.job?.name, JSON.stringify(res));
      const states: IngestJobState[] = [];
      let last;
      for await (const job of c.watchIngestJob(res.job.name)) {
        states.push(job.state);
        last = job;
      }
      assert.equal(last?.state, IngestJobState.INGEST_JOB_STATE_SUCCEEDED, `states ${states}`);
      assert.ok((await c.getVideo(last!.video)).sampleCount > 0);
      const img = await c.ingestImage(readFileSync(srv.media("frame_a_3s.png")), { parent, externalKey: "still" });
      assert.equal(img.video?.kind, MediaKind.MEDIA_KIND_IMAGE);
      assert.equal(img.video?.sampleCount, 1);
    } finally {
      await c.deleteCollection(parent, true);
    }
  });

  test("faces: search by face, people, display names", async (t) => {
    const parent = "collections/ts-faces";
    const col = await c.createCollection("ts-faces", { faces: true });
    assert.equal(col.faces, true);
    try {
      const photo = readFileSync("/usr/share/doc/opencv-doc/opencv4/html/227943776_1.jpg");
      let item;
      try {
        item = await c.ingestImage(photo, { parent, externalKey: "man" });
      } catch (err) {
        if (err instanceof FrameSeekError && err.reason === "MODEL_UNAVAILABLE") {
          t.skip(`server has no models: ${err.details}`);
          return;
        }
        throw err;
      }
      const found = await c.searchByFace(photo, {}, parent);
      assert.equal(found.results.length, 1);
      const hit = found.results[0].hits[0];
      assert.equal(hit.video?.name, item.video?.name);
      assert.ok(hit.score > 0.5 && hit.person !== "", JSON.stringify(hit));
      const noFace = readFileSync(srv.media("frame_a_3s.png")); // a frame of a synthetic test video
      await rejectsWith(c.searchByFace(noFace, {}, parent), status.INVALID_ARGUMENT, ["NO_FACE"]);
      const inVideo = await c.videoPeople(item.video!.name);
      assert.deepEqual(inVideo.map((p) => p.name), [hit.person]);
      assert.equal((await c.updatePerson(hit.person, "Tess")).displayName, "Tess");
      const everyone = [];
      for await (const p of c.listPeople(parent)) everyone.push(p);
      assert.deepEqual(everyone.map((p) => p.displayName), ["Tess"]);
      const again = await c.searchByFace(photo, {}, parent);
      assert.equal(again.results[0].hits[0].personDisplayName, "Tess");
      await rejectsWith(c.updatePerson(`${parent}/people/999999`, "nobody"), status.NOT_FOUND, ["PERSON_NOT_FOUND"]);
    } finally {
      await c.deleteCollection(parent, true);
    }
  });

  test("upload, list, search by image / vector / video, delete", async (t) => {
    const parent = "collections/ts-media";
    await c.createCollection("ts-media");
    try {
      let resA;
      try {
        resA = await c.uploadFile(srv.media("a.mp4"), { parent, externalKey: "a", labels: { src: "mandelbrot" } });
      } catch (err) {
        if (err instanceof FrameSeekError && err.reason === "MODEL_UNAVAILABLE") {
          t.skip(`server has no embedding model: ${err.details}`);
          return;
        }
        throw err;
      }
      const a = resA.video!;
      assert.ok(a.sampleCount > 0 && Math.abs(a.durationSeconds - 8) < 0.5, JSON.stringify(a));
      assert.equal(a.sizeBytes, statSync(srv.media("a.mp4")).size);
      assert.equal(a.filename, "a.mp4");
      assert.equal(resA.alreadyExists, false);
      const again = await c.uploadFile(srv.media("a.mp4"), { parent });
      assert.equal(again.alreadyExists, true);
      assert.equal(again.video!.name, a.name);
      const b = (await c.uploadFile(srv.media("b.mp4"), { parent, externalKey: "b" })).video!;

      const listed: string[] = [];
      for await (const v of c.videos({ parent, pageSize: 1 })) listed.push(v.name);
      assert.deepEqual(listed.sort(), [a.name, b.name].sort());

      const img = await c.searchByImageFile(srv.media("frame_a_3s.png"), { k: 2, maxMatchesPerVideo: 1 }, parent);
      assert.equal(img.hits[0]?.video?.name, a.name, JSON.stringify(img));
      const ts = img.hits[0].matches[0].timestampSeconds;
      assert.ok(Math.abs(ts - 3) <= 1, `frame at 3 s found at ${ts} s`);

      const vec = embedWithServerModel(srv.media("frame_a_3s.png"));
      if (!vec) t.diagnostic("vector part skipped: cannot embed with the server's model in Python");
      else {
        const res = await c.searchByVector(vec, { k: 2, maxMatchesPerVideo: 1 }, parent);
        assert.equal(res.hits[0]?.video?.name, a.name);
        assert.ok(Math.abs(res.hits[0].score - img.hits[0].score) < 1e-3, `${res.hits[0].score} vs ${img.hits[0].score}`);
      }

      const vid = await c.searchByVideoFile(srv.media("clip_a_2s.mp4"), { parent, k: 2 });
      assert.equal(vid.matches[0]?.video?.name, a.name, JSON.stringify(vid));
      assert.ok(Math.abs(vid.matches[0].offsetSeconds - 2) <= 1, `offset ${vid.matches[0].offsetSeconds}`);

      await c.deleteVideo(a.name);
      await rejectsWith(c.getVideo(a.name), status.NOT_FOUND, ["VIDEO_NOT_FOUND"]);
      const after = await c.searchByImageFile(srv.media("frame_a_3s.png"), {}, parent);
      assert.ok(!after.hits.some((h) => h.video?.name === a.name), "deleted video still found");
    } finally {
      await c.deleteCollection(parent, true);
    }
  });
});

// README "Security": a self-signed CA and a server certificate made with openssl, tokens by role.
describe("TLS and tokens against a live server", { skip: skipReason }, () => {
  const tokens = { reader: "ts-reader-token", writer: "ts-writer-token", admin: "ts-admin-token" };
  let dir: string;
  let srv: TestServer;
  // the certificate names 127.0.0.1 and localhost; TLS sends a host name (SNI), never an address
  const byName = { "grpc.ssl_target_name_override": "localhost" };
  const connect = (token?: string) =>
    new FrameSeek(srv.address, { tls: tlsFromFiles({ ca: join(dir, "ca.pem") }), token, channelOptions: byName });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "frameseek-ts-pki-"));
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    ssl("req", "-x509", ...ec, "-days", "2", "-subj", "/CN=ts test CA", "-keyout", "ca.key", "-out", "ca.pem");
    ssl("req", ...ec, "-subj", "/CN=server", "-keyout", "server.key", "-out", "server.csr");
    writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
      "-extfile", "server.ext", "-out", "server.pem");
    const entries = Object.entries(tokens).map(([role, token]) =>
      `[[token]]\nname = "${role}-ts"\nrole = "${role}"\nsha256 = "${createHash("sha256").update(token).digest("hex")}"\n`);
    writeFileSync(join(dir, "tokens.toml"), entries.join("\n"));
    srv = await startServer({
      args: ["--tls-cert", join(dir, "server.pem"), "--tls-key", join(dir, "server.key"), "--auth-tokens", join(dir, "tokens.toml")],
      connect: { tls: tlsFromFiles({ ca: join(dir, "ca.pem") }), channelOptions: byName },
      media: false,
    });
  });
  after(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("roles", async () => {
    const reader = connect(tokens.reader);
    const none = connect();
    const stranger = connect("not-a-token");
    const env = { FRAMESEEK_TLS_CA: join(dir, "ca.pem"), FRAMESEEK_TOKEN: tokens.admin };
    const admin = new FrameSeek(srv.address, { ...optionsFromEnv(env), channelOptions: byName });
    try {
      assert.ok((await reader.stats()).version);
      await rejectsWith(reader.createCollection("ts-sec"), status.PERMISSION_DENIED, ["PERMISSION_DENIED"]);
      assert.equal((await admin.createCollection("ts-sec")).name, "collections/ts-sec");
      await rejectsWith(none.stats(), status.UNAUTHENTICATED, ["UNAUTHENTICATED"]);
      // SearchByVector, which the native front end answers itself, checks the token too
      const dim = (await reader.getCollection(DEFAULT_COLLECTION)).dimension;
      const vec = Array.from({ length: dim }, (_, i) => (i === 0 ? 1 : 0));
      await reader.searchByVector(vec);
      await rejectsWith(stranger.searchByVector(vec), status.UNAUTHENTICATED, ["UNAUTHENTICATED"]);
    } finally {
      for (const c of [reader, none, stranger, admin]) c.close();
    }
  });

  test("plaintext to the TLS port fails", async () => {
    const c = new FrameSeek(srv.address, { insecure: true, token: tokens.reader, allowInsecureToken: true });
    try {
      await assert.rejects(c.stats(), (err: FrameSeekError) => err.code === status.UNAVAILABLE);
    } finally {
      c.close();
    }
  });
});

// A server started with --tls-client-ca admits only clients whose certificate its CA signed.
describe("mutual TLS against a live server", { skip: skipReason }, () => {
  let dir: string;
  let srv: TestServer;
  const byName = { "grpc.ssl_target_name_override": "localhost" };
  const files = (name?: string) =>
    tlsFromFiles({ ca: join(dir, "ca.pem"), ...(name ? { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) } : {}) });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "frameseek-ts-mtls-"));
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    ssl("req", "-x509", ...ec, "-days", "2", "-subj", "/CN=ts mtls CA", "-keyout", "ca.key", "-out", "ca.pem");
    const signed = (name: string, ext: string) => {
      ssl("req", ...ec, "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`);
      writeFileSync(join(dir, `${name}.ext`), ext);
      ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    };
    signed("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    signed("client", "extendedKeyUsage=clientAuth\n");
    // a client certificate the CA never signed
    ssl("req", "-x509", ...ec, "-days", "2", "-subj", "/CN=stranger", "-keyout", "stranger.key", "-out", "stranger.pem");
    srv = await startServer({
      args: ["--tls-cert", join(dir, "server.pem"), "--tls-key", join(dir, "server.key"), "--tls-client-ca", join(dir, "ca.pem")],
      connect: { tls: files("client"), channelOptions: byName },
      media: false,
    });
  });
  after(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a certificate from the CA is admitted, others are refused at the handshake", async () => {
    const member = new FrameSeek(srv.address, { tls: files("client"), channelOptions: byName });
    const anonymous = new FrameSeek(srv.address, { tls: files(), channelOptions: byName });
    const stranger = new FrameSeek(srv.address, { tls: files("stranger"), channelOptions: byName });
    try {
      assert.ok((await member.stats()).version);
      const dim = (await member.getCollection(DEFAULT_COLLECTION)).dimension;
      const vec = Array.from({ length: dim }, (_, i) => (i === 0 ? 1 : 0));
      await member.searchByVector(vec); // the native front end's path
      for (const c of [anonymous, stranger]) {
        await assert.rejects(c.stats(), (err: FrameSeekError) => err.code === status.UNAVAILABLE);
        await assert.rejects(c.searchByVector(vec), (err: FrameSeekError) => err.code === status.UNAVAILABLE);
      }
    } finally {
      for (const c of [member, anonymous, stranger]) c.close();
    }
  });
});
