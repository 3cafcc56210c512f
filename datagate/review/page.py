"""The review page: one self-contained HTML document (inline CSS and JS, no external assets).

Every value from the data is put on the page with ``textContent`` (never ``innerHTML``); the
inline style and script run under a per-response CSP nonce, and the page carries the
server's POST token in a meta tag.
"""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="datagate-token" content="@TOKEN@">
<title>datagate review</title>
<style nonce="@NONCE@">
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d9dde5;
  --accent: #2456c7; --ok: #1d7a3c; --bad: #b3261e; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1rem;
  padding: .6rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.05rem; margin: 0; }
h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  margin: 1rem 0 .3rem; }
nav { display: flex; flex-wrap: wrap; gap: .3rem; }
button { font: inherit; border: 1px solid var(--line); background: #fff; color: var(--fg);
  border-radius: 6px; padding: .3rem .65rem; cursor: pointer; }
button:hover { border-color: var(--accent); }
button.active, button[aria-pressed="true"] { background: var(--accent); color: #fff;
  border-color: var(--accent); }
button[aria-pressed="true"] kbd { color: var(--fg); }
#progress { margin-left: auto; font-weight: 600; }
main { padding: 1rem; max-width: 1500px; }
#card { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
#images { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: .5rem; width: min(528px, 92vw); }
figure img { display: block; width: 100%; height: min(512px, 62vh); object-fit: contain;
  background: #eef0f3; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .35rem;
  overflow-wrap: anywhere; }
.placeholder { display: grid; place-items: center; min-height: 240px; color: var(--bad);
  text-align: center; padding: 1rem; overflow-wrap: anywhere; }
#details { flex: 1 1 360px; min-width: 300px; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; padding: .4rem 1rem 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .8rem; margin: .5rem 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
ul { margin: 0; padding-left: 1.1rem; }
li { overflow-wrap: anywhere; }
table { border-collapse: collapse; }
td { padding: .1rem .8rem .1rem 0; font-variant-numeric: tabular-nums; }
#decided { font-weight: 600; }
#decided.yes { color: var(--ok); }
#actions { display: flex; flex-wrap: wrap; gap: .4rem; margin: 0 0 .4rem; }
kbd { font: .8rem ui-monospace, monospace; border: 1px solid var(--line); border-radius: 4px;
  padding: 0 .3rem; background: var(--bg); }
#status { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; margin: .2rem 0 .8rem;
  min-height: 1.4em; }
#status p { margin: 0; }
#message.error { color: var(--bad); font-weight: 600; }
#message.ok { color: var(--ok); }
#position, footer { color: var(--muted); }
footer { padding: 0 1rem 1rem; font-size: .85rem; }
[hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>datagate review</h1>
  <nav id="tabs" aria-label="queues"></nav>
  <span id="progress" aria-live="polite"></span>
</header>
<main>
  <p id="about"></p>
  <div id="actions">
    <button type="button" data-action="human"><kbd>h</kbd> human</button>
    <button type="button" data-action="synthetic"><kbd>s</kbd> synthetic</button>
    <button type="button" data-action="keep"><kbd>k</kbd> keep</button>
    <button type="button" data-action="reject"><kbd>r</kbd> reject</button>
    <button type="button" data-action="back"><kbd>←</kbd> back</button>
    <button type="button" data-action="skip"><kbd>space</kbd> / <kbd>→</kbd> skip</button>
    <button type="button" data-action="undo"><kbd>u</kbd> / <kbd>⌫</kbd> undo</button>
    <button type="button" data-action="next"><kbd>n</kbd> next undecided</button>
  </div>
  <div id="status">
    <p id="position"></p>
    <p id="message" role="status" aria-live="polite"></p>
  </div>
  <p id="empty" hidden></p>
  <section id="card" hidden>
    <div id="images">
      <figure id="fig-main">
        <img id="img-main" alt="">
        <div id="ph-main" class="placeholder" hidden></div>
        <figcaption id="cap-main"></figcaption>
      </figure>
      <figure id="fig-orig" hidden>
        <img id="img-orig" alt="">
        <div id="ph-orig" class="placeholder" hidden></div>
        <figcaption id="cap-orig"></figcaption>
      </figure>
    </div>
    <div id="details">
      <h2>Image</h2>
      <p id="decided"></p>
      <dl id="facts"></dl>
      <h2>Evidence</h2>
      <ul id="evidence"></ul>
      <h2>Scores</h2>
      <table><tbody id="scores"></tbody></table>
    </div>
  </section>
</main>
<footer>
  Each decision is appended to <span id="overrides"></span> as you make it
  (<span id="reviewer"></span>). <kbd>1</kbd> to <kbd>4</kbd> switch queues.
  Re-run <code>datagate enforce --overrides FILE</code> to apply them.
</footer>
<script nonce="@NONCE@">
"use strict";
const TOKEN = document.querySelector('meta[name="datagate-token"]').content;
const PAGE = 100;
const DECISIONS = { h: "human", s: "synthetic", k: "keep", r: "reject" };
const state = { queues: [], queue: null, pos: 0, pages: new Map(), generation: null,
  history: [], chain: Promise.resolve() };
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Datagate-Token": TOKEN } };
  const response = await fetch(path, opts);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

class Reloaded extends Error {
  constructor() { super("the gate's manifests changed (enforce re-ran): queues reloaded"); }
}

function queueInfo() { return state.queues.find((q) => q.name === state.queue); }

async function loadQueues() {
  const data = await api("/api/queues");
  state.generation = data.generation;
  state.queues = data.queues;
  state.pages.clear();
  if (state.queue !== null && !queueInfo()) state.queue = data.queues.length
    ? data.queues[0].name : null;
  $("overrides").textContent = data.overrides;
  $("reviewer").textContent = data.reviewer ? `as ${data.reviewer}` : "no reviewer name";
  renderTabs();
}

function renderTabs() {
  const nav = $("tabs");
  nav.replaceChildren();
  state.queues.forEach((q, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.queue = q.name;
    b.className = q.name === state.queue ? "tab active" : "tab";
    b.textContent = `${i + 1} · ${q.title} (${q.total.toLocaleString("en")})`;
    b.title = q.about;
    b.addEventListener("click", () => { b.blur(); run(() => selectQueue(q.name)); });
    nav.append(b);
  });
  renderProgress();
}

function renderProgress() {
  const q = queueInfo();
  const p = $("progress");
  if (!q) { p.textContent = ""; return; }
  p.dataset.decided = q.decided;
  p.dataset.total = q.total;
  p.textContent = `${q.title}: ${q.decided.toLocaleString("en")} / `
    + `${q.total.toLocaleString("en")} decided`;
}

function applyProgress(progress) {
  for (const q of state.queues) if (q.name in progress) q.decided = progress[q.name];
  renderProgress();
}

async function selectQueue(name) {
  if (!state.queues.some((q) => q.name === name)) return;
  state.queue = name;
  history.replaceState(null, "", "#" + enc(name));
  renderTabs();
  const q = queueInfo();
  state.pos = 0;
  if (q.total) {
    const next = await api(`/api/next?queue=${enc(name)}&from=0`);
    if (next.position !== null) state.pos = next.position;
  }
  await show();
}

async function itemAt(pos) {
  const page = Math.floor(pos / PAGE);
  const id = `${state.queue}:${page}`;
  if (!state.pages.has(id)) {
    const data = await api(
      `/api/page?queue=${enc(state.queue)}&offset=${page * PAGE}&limit=${PAGE}`);
    if (data.generation !== state.generation) {  // enforce re-ran: the queues changed
      await loadQueues();
      throw new Reloaded();
    }
    state.pages.set(id, data.items);
    applyProgress({ [state.queue]: data.decided });
    while (state.pages.size > 8) state.pages.delete(state.pages.keys().next().value);
  }
  return state.pages.get(id)[pos - page * PAGE];
}

function imageUrl(key) { return `/api/image?key=${enc(key)}`; }

function showImage(which, item, caption) {
  const img = $(`img-${which}`);
  const ph = $(`ph-${which}`);
  $(`cap-${which}`).textContent = caption;
  const fail = (why) => {
    img.hidden = true;
    ph.hidden = false;
    ph.textContent = `no preview: ${why}`;
  };
  img.onerror = () => fail(item.error || "the image could not be read or decoded");
  img.onload = () => { img.hidden = false; ph.hidden = true; };
  if (item.missing) { fail("not in this gate's manifests"); return; }
  img.alt = item.key;
  img.src = imageUrl(item.key);
}

function fact(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  dl.append(dt, dd);
}

function describeDecision(d) {
  if (!d) return "undecided";
  const who = [d.reviewer, d.time].filter(Boolean).join(", ");
  return `decided: ${d.decision}` + (who ? ` (${who})` : "");
}

function render(item) {
  const q = queueInfo();
  $("card").hidden = false;
  $("empty").hidden = true;
  showImage("main", item, item.key);
  const orig = item.original;
  $("fig-orig").hidden = !orig;
  if (orig) showImage("orig", orig, `duplicate of: ${orig.key}`
    + (orig.source ? ` (${orig.source})` : ""));
  const decided = $("decided");
  decided.textContent = describeDecision(item.decision);
  decided.className = item.decision ? "yes" : "";
  const dl = $("facts");
  dl.replaceChildren();
  fact(dl, "key", item.key);
  fact(dl, "sha256", item.sha256 || "none (the file could not be read)");
  fact(dl, "manifest", item.source);
  fact(dl, "shard", item.shard);
  fact(dl, "member", item.member);
  fact(dl, "size", item.size);
  const origin = [item.origin, item.origin_strength, item.generator]
    .filter(Boolean).join(" · ");
  fact(dl, "origin", origin + (item.conflict ? " (conflicting evidence)" : ""));
  fact(dl, "P(synthetic) from", item.detector_source);
  fact(dl, "rule", item.rule_id);
  fact(dl, "reason", item.reason);
  fact(dl, "reason code", item.reason_code);
  fact(dl, "duplicate of", item.duplicate_of);
  fact(dl, "error", item.error);
  fact(dl, "applied by enforce", item.applied);
  fact(dl, "added from reserve for", item.reserve);
  const ev = $("evidence");
  ev.replaceChildren();
  for (const line of item.evidence.length ? item.evidence : ["none recorded"]) {
    const li = document.createElement("li");
    li.textContent = line;
    ev.append(li);
  }
  const scores = $("scores");
  scores.replaceChildren();
  for (const [name, value] of item.scores) {
    const tr = document.createElement("tr");
    const a = document.createElement("td");
    a.textContent = name;
    const b = document.createElement("td");
    b.textContent = String(value);
    tr.append(a, b);
    scores.append(tr);
  }
  if (!item.scores.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.textContent = "none measured";
    tr.append(td);
    scores.append(tr);
  }
  for (const b of document.querySelectorAll("#actions button")) {
    const pressed = item.decision && item.decision.decision === b.dataset.action;
    b.setAttribute("aria-pressed", pressed ? "true" : "false");
  }
  const pos = $("position");
  pos.dataset.position = state.pos;
  pos.dataset.key = item.key;
  pos.textContent = `item ${(state.pos + 1).toLocaleString("en")} of `
    + `${q.total.toLocaleString("en")}`;
}

async function show() {
  const q = queueInfo();
  renderProgress();
  if (!q) return;
  $("about").textContent = q.about;
  if (!q.total) {
    $("card").hidden = true;
    $("empty").hidden = false;
    $("empty").textContent = `Nothing to review in “${q.title}”.`;
    $("position").textContent = "";
    return;
  }
  state.pos = Math.max(0, Math.min(state.pos, q.total - 1));
  let item;
  try {
    item = await itemAt(state.pos);
  } catch (e) {
    if (!(e instanceof Reloaded)) throw e;
    say(e.message, "ok");
    return show();
  }
  render(item);
  prefetch(q);
}

function prefetch(q) {
  const page = state.pages.get(`${state.queue}:${Math.floor(state.pos / PAGE)}`) || [];
  for (let i = 1; i <= 3; i++) {
    const item = page[(state.pos % PAGE) + i];
    if (item) new Image().src = imageUrl(item.key);
  }
  const ahead = state.pos + 20;
  if (ahead < q.total && ahead % PAGE < 20) itemAt(ahead).catch(() => {});
}

function markDecided(sha, decision) {
  for (const items of state.pages.values()) {
    for (const item of items) {
      if (item.sha256 === sha) item.decision = decision;
      if (item.original && item.original.sha256 === sha) item.original.decision = decision;
    }
  }
}

async function decide(decision) {
  const q = queueInfo();
  if (!q || !q.total) return;
  const item = await itemAt(state.pos);
  if (!item.sha256) {
    say("this file could not be read, so it has no content hash to decide on", "error");
    return;
  }
  const data = await api("/api/decide", { key: item.key, decision });
  markDecided(item.sha256, data.decision);
  applyProgress(data.progress);
  state.history.push({ queue: state.queue, pos: state.pos });
  say(`${decision}: ${item.key}`, "ok");
  if (state.pos < q.total - 1) state.pos += 1;
  else say(`${decision}: ${item.key} — end of this queue`, "ok");
  await show();
}

async function undo() {
  const data = await api("/api/undo", {});
  markDecided(data.undone.sha256, data.in_force);
  applyProgress(data.progress);
  const back = state.history.pop();
  if (back) {
    if (back.queue !== state.queue) { state.queue = back.queue; renderTabs(); }
    state.pos = back.pos;
  }
  say(`undone: ${data.undone.decision} for ${data.undone.sha256.slice(0, 12)}…`, "ok");
  await show();
}

async function move(step) {
  const q = queueInfo();
  if (!q || !q.total) return;
  const next = state.pos + step;
  if (next < 0 || next >= q.total) { say("end of this queue", "ok"); return; }
  state.pos = next;
  await show();
}

async function nextUndecided() {
  const q = queueInfo();
  if (!q || !q.total) return;
  const next = await api(`/api/next?queue=${enc(state.queue)}&from=${state.pos + 1}`);
  if (next.position === null) { say("every item of this queue is decided", "ok"); return; }
  state.pos = next.position;
  await show();
}

function run(action) {  // one action at a time, in the order asked: typing ahead is safe
  state.chain = state.chain.then(action).catch((e) => say(e.message, "error"));
  return state.chain;
}

const ACTIONS = { human: () => decide("human"), synthetic: () => decide("synthetic"),
  keep: () => decide("keep"), reject: () => decide("reject"), skip: () => move(1),
  back: () => move(-1), undo, next: nextUndecided };

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  let action = null;
  const once = !e.repeat;  // holding a key down must not decide a run of images
  if (DECISIONS[key] && once) action = ACTIONS[DECISIONS[key]];
  else if (key === " " || key === "ArrowRight") action = ACTIONS.skip;
  else if (key === "ArrowLeft") action = ACTIONS.back;
  else if ((key === "u" || key === "Backspace") && once) action = ACTIONS.undo;
  else if (key === "n") action = ACTIONS.next;
  else if (/^[1-9]$/.test(key) && state.queues[Number(key) - 1]) {
    const name = state.queues[Number(key) - 1].name;
    action = () => selectQueue(name);
  }
  if (!action) return;
  e.preventDefault();
  run(action);
});

for (const b of document.querySelectorAll("#actions button")) {
  b.addEventListener("click", () => { b.blur(); run(ACTIONS[b.dataset.action]); });
}

run(async () => {
  await loadQueues();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = state.queues.find((q) => q.name === wanted)
    || state.queues.find((q) => q.total > 0) || state.queues[0];
  if (first) await selectQueue(first.name);
  document.body.dataset.ready = "true";
});
</script>
</body>
</html>
"""


def render_page(token: str, nonce: str) -> str:
    """The page, carrying the server's POST token and this response's CSP nonce."""
    return _PAGE.replace("@TOKEN@", html.escape(token)).replace("@NONCE@", html.escape(nonce))
