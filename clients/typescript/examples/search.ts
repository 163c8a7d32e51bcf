/**
 * Uploads videos to a frameseek server and searches them by an image.
 *
 *   npm run build && node dist/examples/search.js --image frame.jpg movie1.mp4 movie2.mp4
 *   (server: FRAMESEEK_SERVER, default 127.0.0.1:50051)
 */
import { parseArgs } from "node:util";

import { FrameSeek, FrameSeekError } from "../src";

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      server: { type: "string", default: process.env.FRAMESEEK_SERVER ?? "127.0.0.1:50051" },
      image: { type: "string" },
      k: { type: "string", default: "5" },
      tls: { type: "boolean", default: false },
    },
  });
  const token = process.env.FRAMESEEK_TOKEN;
  const fs = new FrameSeek(values.server!, values.tls ? { tls: {}, token } : { insecure: true });
  try {
    await fs.waitReady(600_000);
    for (const path of positionals) {
      const res = await fs.uploadFile(path, { externalKey: path });
      const v = res.video!;
      console.log(`${path}  ${v.name}  ${v.durationSeconds.toFixed(1)} s  ${v.sampleCount} samples  already=${res.alreadyExists}`);
    }
    if (values.image) {
      const res = await fs.searchByImageFile(values.image, { k: Number(values.k), maxMatchesPerVideo: 3 });
      for (const hit of res.hits) {
        const at = hit.matches.map((m) => `@${m.timestampSeconds.toFixed(1)}s`).join(" ");
        console.log(`${hit.score.toFixed(3)}  ${hit.video!.name} (${hit.video!.externalKey})  ${at}`);
      }
    }
    let n = 0;
    for await (const _ of fs.videos({ pageSize: 100 })) n++;
    console.log(`${n} videos in the default collection`);
  } catch (err) {
    if (err instanceof FrameSeekError) console.error(`error: ${err.details} (code ${err.code}, reason ${err.reason})`);
    else console.error(err);
    process.exitCode = 1;
  } finally {
    fs.close();
  }
}

void main();
