// frameseek web console: plain JS, no build step. Each page's HTML shell names its page in
// <body data-page>; the matching function below fills it from the console's JSON API (/api/...),
// which calls the gRPC API and answers errors as {error: {code, reason, message}}.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
};

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.code = e.code || String(status);
    this.reason = e.reason || "";
  }
  toString() { return `${this.message} (${[this.code, this.reason].filter(Boolean).join(", ")})`; }
}

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function showError(err) {
  const box = $("#error");
  box.textContent = err instanceof ApiError ? err.toString() : String(err);
  box.hidden = false;
}
function clearError() { $("#error").hidden = true; }

const fmtTime = (s) => {
  s = Number(s) || 0;
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = (s % 60).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
};
const fmtBytes = (n) => {
  n = Number(n) || 0;
  for (const u of ["B", "KiB", "MiB", "GiB", "TiB"]) { if (n < 1024 || u === "TiB") return `${n.toFixed(u === "B" ? 0 : 1)} ${u}`; n /= 1024; }
};
const videoId = (name) => name.split("/").pop();
const collectionOf = (name) => name.split("/")[1];
const videoUrl = (name, t) => `/${name}` + (t !== undefined ? `?t=${Number(t).toFixed(2)}` : "");
const thumbUrl = (name, t) => `/thumbs/${videoId(name)}?t=${Number(t || 0).toFixed(2)}`;
const thumb = (name, t, cls = "thumb", loading = "lazy") =>
  el("img", { class: cls, src: thumbUrl(name, t), alt: "", loading, onerror: (e) => e.target.classList.add("missing") });
const labelChips = (labels) => Object.entries(labels || {}).map(([k, v]) => el("span", { class: "chip" }, `${k}:${v}`));
const title = (v) => v.filename || v.external_key || v.name;

async function fillCollections(select) {
  try {
    const { collections } = await api("/api/collections");
    for (const c of collections) select.append(el("option", { value: c.name.split("/")[1] }, c.name.split("/")[1]));
  } catch (err) { showError(err); }
}

function dropZone(zone, input, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    if (e.dataTransfer.files.length) onFiles([...e.dataTransfer.files]);
  });
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); input.value = ""; });
}

// ---------------------------------------------------------------------------------------------
// Library: paged ListVideos, label filter, delete.
async function library() {
  const tbody = $("#videos tbody"), tokens = [""];
  let page = 0;
  const params = () => {
    const p = new URLSearchParams({ page_size: $("#page-size").value, page_token: tokens[page] });
    if ($("#collection").value) p.set("collection", $("#collection").value);
    for (const l of $("#label").value.split(",").map((s) => s.trim()).filter(Boolean)) p.append("label", l);
    return p;
  };
  // the first page as the server inlined it (all collections, no filter, the default page size)
  let inlined = JSON.parse($("#first-page").textContent);
  async function load() {
    clearError();
    let r;
    try {
      if (inlined && inlined.error) throw new ApiError(0, inlined);
      r = inlined || await api(`/api/videos?${params()}`);
    } catch (err) { showError(err); return; } finally { inlined = null; }
    tbody.replaceChildren(...r.videos.map(row));
    tokens[page + 1] = r.next_page_token;
    $("#total").textContent = `${r.total_size} item${r.total_size == 1 ? "" : "s"}`;
    $("#page-no").textContent = `page ${page + 1}`;
    $("#prev").disabled = page === 0;
    $("#next").disabled = !r.next_page_token;
    document.body.dataset.rendered = String(performance.now());
  }
  function row(v) {
    const del = el("button", { class: "danger", title: "Delete", onclick: async () => {
      if (!confirm(`Delete ${title(v)}? It is gone from every search at once.`)) return;
      try { await api(`/api/${v.name}`, { method: "DELETE" }); tr.remove(); } catch (err) { showError(err); }
    } }, "Delete");
    const image = v.kind === "MEDIA_KIND_IMAGE";
    const tr = el("tr", { "data-name": v.name },
      el("td", {}, el("a", { href: videoUrl(v.name) }, thumb(v.name, image ? 0 : Math.min(v.duration_seconds / 2, 5)))),
      el("td", {}, el("a", { href: videoUrl(v.name) }, title(v)), el("div", { class: "muted" }, v.name)),
      el("td", {}, image ? "photo" : "video"),
      el("td", {}, image ? "–" : fmtTime(v.duration_seconds)),
      el("td", {}, `${v.width}×${v.height}`, el("div", { class: "muted" }, fmtBytes(v.size_bytes))),
      el("td", {}, labelChips(v.labels)),
      el("td", { class: "num" }, String(v.sample_count)),
      el("td", { class: "num" }, v.ingest_realtime_factor ? `${v.ingest_realtime_factor.toFixed(1)}× realtime` : "–"),
      el("td", {}, del));
    return tr;
  }
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); page = 0; tokens.length = 1; load(); });
  $("#prev").addEventListener("click", () => { page--; load(); });
  $("#next").addEventListener("click", () => { page++; load(); });
  fillCollections($("#collection"));
  await load();
}

// ---------------------------------------------------------------------------------------------
// A video: player (from ?t=), thumbnail strip at its samples, its copies.
async function video() {
  const name = location.pathname.slice(1);
  const t0 = Number(new URLSearchParams(location.search).get("t") || 0);
  let r;
  try { r = await api(`/api/${name}`); } catch (err) { showError(err); return; }
  const v = r.video, image = v.kind === "MEDIA_KIND_IMAGE";
  document.title = `${title(v)} · frameseek`;
  const player = $("#player");
  let seek = () => {};
  if (r.original && !image) {
    const media = el("video", { controls: true, preload: "metadata", src: `/media/${videoId(name)}` });
    media.addEventListener("loadedmetadata", () => { media.currentTime = t0; if (t0) media.play().catch(() => {}); }, { once: true });
    media.addEventListener("error", () => player.append(el("p", { class: "muted" }, "This browser cannot play this format; the thumbnails show the samples.")));
    seek = (t) => { media.currentTime = t; media.play().catch(() => {}); };
    player.append(media);
  } else {
    player.append(el("img", { class: "still", src: image && r.original ? `/media/${videoId(name)}` : thumbUrl(name, t0), alt: "" }));
  }
  const facts = { Name: v.name, File: v.filename || "–", Kind: image ? "photo" : "video", Duration: image ? "–" : fmtTime(v.duration_seconds),
    Frame: `${v.width}×${v.height}`, Size: fmtBytes(v.size_bytes), Samples: v.sample_count, Model: v.model,
    Ingest: v.ingest_realtime_factor ? `${v.ingest_realtime_factor.toFixed(1)}× realtime` : "–", Created: v.create_time };
  $("#facts").replaceChildren(...Object.entries(facts).flatMap(([k, x]) => [el("dt", {}, k), el("dd", {}, String(x))]),
    el("dt", {}, "Labels"), el("dd", {}, labelChips(v.labels)));
  const ts = r.thumbnails, step = Math.max(1, Math.ceil(ts.length / 60));
  $("#strip").replaceChildren(...ts.filter((_, i) => i % step === 0).map((t) =>
    el("figure", { class: "sample", "data-t": t, onclick: () => seek(t) }, thumb(name, t, "thumb", "eager"), el("figcaption", {}, fmtTime(t)))));
  if (!ts.length) $("#strip").append(el("p", { class: "muted" }, "No thumbnails (ingested while the console was off)."));
  if (image) { $("#copies").replaceChildren(el("p", { class: "muted" }, "Photos have no copies search; search by image instead.")); return; }
  try {
    const c = await api(`/api/${name}/copies`);
    renderMatches($("#copies"), c, (t) => thumb(name, t), "this video");
  } catch (err) { $("#copies").replaceChildren(el("p", { class: "muted" }, err.toString())); }
}

const searchParams = () => {
  const p = new URLSearchParams({ k: 12 });
  if ($("#collection").value) p.set("collection", $("#collection").value);
  return p;
};

// ---------------------------------------------------------------------------------------------
// Search by image: drop / paste / choose -> hits with the matched moment.
async function searchImage() {
  const zone = $("#drop");
  async function search(file) {
    clearError();
    const start = performance.now();
    document.body.dataset.started = String(start);
    $("#preview").src = URL.createObjectURL(file); $("#preview").hidden = false;
    $("#status").textContent = "Searching…";
    $("#hits").replaceChildren();
    let r;
    try { r = await api(`/api/search/image?${searchParams()}`, { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } }); }
    catch (err) { showError(err); $("#status").textContent = ""; return; }
    $("#hits").replaceChildren(...r.hits.map((h) => {
      const m = h.matches[0] || { timestamp_seconds: 0 };
      const image = h.video.kind === "MEDIA_KIND_IMAGE";
      return el("a", { class: "hit", href: videoUrl(h.video.name, m.timestamp_seconds), "data-name": h.video.name, "data-t": m.timestamp_seconds },
        thumb(h.video.name, m.timestamp_seconds, "thumb big"),
        el("div", { class: "hit-title" }, title(h.video)),
        el("div", {}, image ? "photo" : `at ${fmtTime(m.timestamp_seconds)}`, el("span", { class: "score" }, h.score.toFixed(3))),
        el("div", { class: "muted" }, h.matches.slice(1).map((x) => fmtTime(x.timestamp_seconds)).join(" · ")));
    }));
    const ms = performance.now() - start;
    $("#status").textContent = r.hits.length ? `${r.hits.length} hits in ${ms.toFixed(0)} ms (server ${r.elapsed_ms.toFixed(0)} ms)` : "No hits.";
    document.body.dataset.rendered = String(performance.now());
  }
  fillCollections($("#collection"));
  dropZone(zone, $("#file"), (files) => search(files[0]));
  document.addEventListener("paste", (e) => {
    const f = [...e.clipboardData.files].find((x) => x.type.startsWith("image/"));
    if (f) search(f);
  });
}

// ---------------------------------------------------------------------------------------------
// Search by video: drop a clip -> copies with aligned timelines and side-by-side moments.
function clipFrames(file) {
  // Frames of the dropped clip at given times, grabbed in the browser (when it can decode it).
  const media = el("video", { muted: true, preload: "auto", src: URL.createObjectURL(file) });
  const ready = new Promise((ok) => { media.onloadeddata = () => ok(true); media.onerror = () => ok(false); });
  let queue = Promise.resolve();
  return (t) => {
    const canvas = el("canvas", { class: "thumb", width: 160, height: 90 });
    queue = queue.then(async () => {
      if (!(await ready)) { canvas.classList.add("missing"); return; }
      await new Promise((ok) => { media.onseeked = ok; media.currentTime = t; });
      canvas.height = Math.round(160 * media.videoHeight / media.videoWidth) || 90;
      canvas.getContext("2d").drawImage(media, 0, 0, canvas.width, canvas.height);
      canvas.dataset.drawn = "1";
    });
    return canvas;
  };
}

function timeline(match, queryDuration, queryLabel) {
  // Query on top, reference below; each aligned segment is a band between its two stretches.
  const W = 640, H = 84, refDur = Number(match.video.duration_seconds) || 1, qDur = Number(queryDuration) || 1;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "timeline");
  const add = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  add("rect", { x: 0, y: 4, width: W, height: 14, class: "track" });
  add("rect", { x: 0, y: H - 18, width: W, height: 14, class: "track" });
  add("text", { x: 4, y: 32, class: "axis" }).textContent = `${queryLabel} 0–${fmtTime(qDur)}`;
  add("text", { x: 4, y: H - 24, class: "axis" }).textContent = `${title(match.video)} 0–${fmtTime(refDur)}`;
  const x = (t, dur) => Math.min(W, Math.max(0, t / dur * W));  // an alignment may reach past either end
  for (const s of match.segments) {
    const q0 = x(s.query_start_seconds, qDur), q1 = Math.max(x(s.query_end_seconds, qDur), q0 + 2);
    const r0 = x(s.reference_start_seconds, refDur), r1 = Math.max(x(s.reference_end_seconds, refDur), r0 + 2);
    add("polygon", { points: `${q0},18 ${q1},18 ${r1},${H - 18} ${r0},${H - 18}`, class: "band" });
    add("rect", { x: q0, y: 4, width: q1 - q0, height: 14, class: "seg" });
    add("rect", { x: r0, y: H - 18, width: r1 - r0, height: 14, class: "seg" });
  }
  return svg;
}

function renderMatches(box, r, queryFrame, queryLabel = "the clip") {
  if (!r.matches.length) { box.replaceChildren(el("p", { class: "muted" }, "No copies found.")); return; }
  box.replaceChildren(...r.matches.map((m) => {
    const pairs = m.segments.slice(0, 8).map((s) => {
      const q = (s.query_start_seconds + s.query_end_seconds) / 2;
      const ref = (s.reference_start_seconds + s.reference_end_seconds) / 2;
      return el("div", { class: "pair" },
        el("figure", {}, queryFrame(q), el("figcaption", {}, `${queryLabel.replace(/^the /, "")} ${fmtTime(q)}`)),
        el("a", { href: videoUrl(m.video.name, ref) }, el("figure", {}, thumb(m.video.name, ref), el("figcaption", {}, `ref ${fmtTime(ref)}`))));
    });
    return el("section", { class: "match", "data-name": m.video.name, "data-offset": m.offset_seconds, "data-speed": m.speed },
      el("h3", {}, el("a", { href: videoUrl(m.video.name) }, title(m.video)), el("span", { class: "score" }, `score ${m.score.toFixed(3)}`)),
      el("div", { class: "muted" }, `offset ${m.offset_seconds >= 0 ? "+" : ""}${m.offset_seconds.toFixed(2)} s · speed ${m.speed.toFixed(2)}× · ` +
        `covers ${(m.query_coverage * 100).toFixed(0)} % of ${queryLabel}, ${(m.reference_coverage * 100).toFixed(0)} % of the reference · ${m.segments.length} segment(s)`),
      timeline(m, r.query_duration_seconds, queryLabel.replace(/^the /, "")),
      el("div", { class: "pairs" }, pairs));
  }));
}

async function searchVideo() {
  async function search(file) {
    clearError();
    const start = performance.now();
    $("#status").textContent = `Searching with ${file.name} (${fmtBytes(file.size)})…`;
    $("#matches").replaceChildren();
    let r;
    try { r = await api(`/api/search/video?${searchParams()}`, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } }); }
    catch (err) { showError(err); $("#status").textContent = ""; return; }
    renderMatches($("#matches"), r, clipFrames(file));
    $("#status").textContent = `${r.matches.length} copies · clip ${fmtTime(r.query_duration_seconds)}, ${r.query_samples} samples · ${(performance.now() - start).toFixed(0)} ms`;
    document.body.dataset.rendered = String(performance.now());
  }
  fillCollections($("#collection"));
  dropZone($("#drop"), $("#file"), (files) => search(files[0]));
}

// ---------------------------------------------------------------------------------------------
// Ingest: upload with progress (XHR), then the job's progress (WatchIngestJob as server events).
async function ingest() {
  fillCollections($("#collection"));
  function upload(file) {
    const bar = el("progress", { max: 1, value: 0 }), state = el("span", { class: "state" }, "uploading");
    const item = el("li", { "data-file": file.name }, el("strong", {}, file.name), ` ${fmtBytes(file.size)} `, state, bar);
    $("#uploads").prepend(item);
    const p = new URLSearchParams({ filename: file.name });
    if ($("#collection").value) p.set("collection", $("#collection").value);
    for (const l of $("#labels").value.split(",").map((s) => s.trim()).filter(Boolean)) p.append("label", l);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/ingest?${p}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
    const fail = (err) => { item.classList.add("failed"); state.textContent = err.toString(); };
    xhr.onerror = () => fail(new Error("the upload failed (network error)"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 300) { fail(new ApiError(xhr.status, body)); return; }
      watch(body.job, item, bar, state);
    };
    xhr.send(file);
  }
  function watch(job, item, bar, state) {
    const show = (j) => {
      bar.value = j.progress || (j.state === "INGEST_JOB_STATE_SUCCEEDED" ? 1 : 0);
      const left = j.estimated_seconds_remaining ? `, ~${Math.ceil(j.estimated_seconds_remaining)} s left` : "";
      state.textContent = `${j.state.replace("INGEST_JOB_STATE_", "").toLowerCase()} ${j.samples_done}/${j.samples_total || "?"} samples${left}`;
      if (j.state === "INGEST_JOB_STATE_SUCCEEDED") {
        item.classList.add("done");
        state.replaceChildren("indexed: ", el("a", { href: videoUrl(j.video) }, j.video));
      } else if (j.state === "INGEST_JOB_STATE_FAILED") {
        item.classList.add("failed");
        state.textContent = `failed: ${j.error.message} (${j.error.reason})`;
      }
    };
    show(job);
    if (job.state === "INGEST_JOB_STATE_SUCCEEDED" || job.state === "INGEST_JOB_STATE_FAILED") return;
    const events = new EventSource(`/api/jobs/${job.name.split("/")[1]}/events`);
    events.addEventListener("job", (e) => show(JSON.parse(e.data)));
    events.addEventListener("error", (e) => { if (e.data) { item.classList.add("failed"); state.textContent = new ApiError(0, JSON.parse(e.data)).toString(); } events.close(); });
    events.addEventListener("end", () => events.close());
  }
  const onFiles = (files) => files.forEach(upload);
  dropZone($("#drop"), $("#files"), onFiles);
}

// ---------------------------------------------------------------------------------------------
// Stats: GetStats plus the console's rates, refreshed every 2 s.
async function stats() {
  async function load() {
    let s;
    try { s = await api("/api/stats"); clearError(); } catch (err) { showError(err); return; }
    const card = (k, v) => el("div", { class: "card" }, el("div", { class: "value" }, String(v)), el("div", { class: "muted" }, k));
    $("#cards").replaceChildren(
      card("videos and photos", s.video_count), card("samples", s.sample_count),
      card("index vectors", s.collections.reduce((a, c) => a + Number(c.index_vectors || 0), 0)),
      card("storage", fmtBytes(s.storage_bytes)), card("searches / s", s.rates.search_qps.toFixed(2)),
      card("ingest × realtime (mean)", s.rates.ingest_realtime_mean ? s.rates.ingest_realtime_mean.toFixed(1) : "–"),
      card("active ingests", s.active_ingests), card("copy threshold", s.copy_threshold),
      card("uptime", fmtTime(s.uptime_seconds)), card("version · SIMD", `${s.version} · ${s.simd_level}`));
    $("#collections tbody").replaceChildren(...s.collections.map((c) => el("tr", {},
      el("td", {}, c.collection), el("td", { class: "num" }, c.video_count), el("td", { class: "num" }, c.sample_count),
      el("td", { class: "num" }, c.index_vectors), el("td", { class: "num" }, fmtTime(c.total_duration_seconds)))));
    document.body.dataset.rendered = String(performance.now());
  }
  await load();
  setInterval(load, 2000);
}

const PAGES = { library, video, "search-image": searchImage, "search-video": searchVideo, ingest, stats };
PAGES[document.body.dataset.page]().catch(showError);
