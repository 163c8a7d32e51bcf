/**
 * Test harness: one real frameseek server (the Python package in the repo's .venv, built by
 * `make setup`) on a free loopback port (--address 127.0.0.1:0 --port-file) with a fresh data
 * directory, plus small media made with ffmpeg. Without the venv, server tests skip with a reason.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { FrameSeek, type ConnectOptions } from "../src";

export const repoRoot = resolve(process.env.FRAMESEEK_REPO_ROOT ?? join(__dirname, "..", "..", "..", ".."));
const exe = join(repoRoot, ".venv", "bin", "frameseek");

/** Why the server tests cannot run here, or false. Same precondition as the Python server tests
 * (tests/server/helpers.py needs_index): without the native index the server cannot start. */
export const skipReason: string | false = ((): string | false => {
  if (!existsSync(exe)) return `no frameseek server at ${exe} (run \`make setup\` at the repo root)`;
  try {
    execFileSync(join(repoRoot, ".venv", "bin", "python"), ["-c",
      "import frameseek._native as n, sys; sys.exit(0 if hasattr(n, 'HnswIndex') else 3)"], { stdio: "ignore" });
  } catch (err) {
    return `frameseek._native.HnswIndex is not built in ${repoRoot}/.venv (${String(err)}): the server cannot start`;
  }
  return false;
})();

export interface TestServer {
  address: string;
  media: (name: string) => string;
  log: () => string;
  stop: () => Promise<void>;
}

function makeMedia(dir: string): void {
  const ff = (...args: string[]) => execFileSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", ...args], { cwd: dir });
  const x264 = ["-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast"];
  ff("-f", "lavfi", "-i", "mandelbrot=size=320x240:rate=10", "-t", "8", ...x264, "a.mp4");
  ff("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10", "-t", "5", ...x264, "b.mp4");
  ff("-ss", "3", "-i", "a.mp4", "-frames:v", "1", "frame_a_3s.png");
  ff("-ss", "2", "-i", "a.mp4", "-t", "4", "-vf", "scale=288:216", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "30", "clip_a_2s.mp4");
}

/** Starts the server and waits until it is SERVING (the wait guards against a hang, it is no
 * performance bound). `args`: extra `frameseek serve` flags; `connect`: how the readiness check
 * connects; `media`: make the test media too. */
export async function startServer(opts: { args?: string[]; connect?: ConnectOptions; media?: boolean } = {}): Promise<TestServer> {
  const { args = [], connect = { insecure: true }, media = true } = opts;
  const tmp = mkdtempSync(join(tmpdir(), "frameseek-ts-test-"));
  const mediaDir = join(tmp, "media");
  execFileSync("mkdir", ["-p", mediaDir]);
  if (media) makeMedia(mediaDir);
  const portFile = join(tmp, "port");
  const logPath = join(tmp, "server.log");
  const logFd = openSync(logPath, "a");
  const proc: ChildProcess = spawn(exe, ["serve", "--address", "127.0.0.1:0", "--data-dir", join(tmp, "data"), "--port-file", portFile, ...args], {
    env: { ...process.env, FRAMESEEK_METRICS_ADDRESS: "" },
    stdio: ["ignore", logFd, logFd],
  });
  const log = () => (existsSync(logPath) ? readFileSync(logPath, "utf8").slice(-8000) : "");
  let exited = false;
  proc.on("exit", () => (exited = true));
  const stop = async () => {
    if (!exited) {
      proc.kill("SIGTERM");
      for (let i = 0; i < 600 && !exited; i++) await sleep(50);
      if (!exited) proc.kill("SIGKILL");
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  while (!existsSync(portFile) || readFileSync(portFile, "utf8").trim() === "") {
    if (exited) {
      const text = log();
      await stop();
      throw new Error(`frameseek serve exited early:\n${text}`);
    }
    await sleep(50);
  }
  const address = `127.0.0.1:${readFileSync(portFile, "utf8").trim()}`;
  const c = new FrameSeek(address, connect);
  try {
    await c.waitReady(300_000);
  } catch (err) {
    const text = log();
    await stop();
    throw new Error(`${String(err)}\n${text}`);
  } finally {
    c.close();
  }
  return { address, media: (n) => join(mediaDir, n), log, stop };
}

/** The server's own Python embedder, as a client with its own encoder of the model would use it. */
export function embedWithServerModel(imagePath: string): number[] | undefined {
  const script = `import sys, json, av
from frameseek.embed import load_embedder
with av.open(sys.argv[1]) as c:
    frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
print(json.dumps(load_embedder().embed([frame])[0].astype(float).tolist()))`;
  try {
    return JSON.parse(execFileSync(join(repoRoot, ".venv", "bin", "python"), ["-c", script, imagePath], { stdio: ["ignore", "pipe", "ignore"] }).toString());
  } catch {
    return undefined;
  }
}
