// The hub's dashboard: sign in once with an API key (kept in localStorage), read the fleet
// once over REST, then follow it live over the stream (stream.js). Pages are hash routes:
// #/ the fleet, #/device/<id> one device, #/voice, #/try the phrase tester, #/home the home
// model, #/bridge the hub and its edges, #/logs the hub's and edges' log lines. No build step,
// no CDN.
import { Listener } from "./listen.js";
import { Stream } from "./stream.js";

const KEY = "xiaozhi_api_key";
const PAGES = ["fleet", "device", "voice", "try", "home", "bridge", "logs"];
const MAX_EVENTS = 50;
const $ = (id) => document.getElementById(id);
const devices = new Map(); // id -> the REST shape of a device, kept up to date by the stream
const events = new Map(); // id -> recent events, newest first
const tools = new Map(); // id -> MCP tool names the device last announced (the hub keeps them)
const keptAudio = new Set(); // message ids whose audio the hub keeps (GET /utterances): "play"
const history = new Map(); // id -> {telemetry field or sensor type: [numbers]}, since the page opened
const MAX_POINTS = 60;
const utterances = new Map(); // message_id -> {device_id, steps: [{step, at, payload}]}, oldest first
const MAX_UTTERANCES = 100;
const VOICE_STEPS = new Set(["voice_command", "action", "action_result", "response"]);
let stream = null;
let listener = null; // the device page's live audio (listen.js), while it listens
const players = new Map(); // message_id -> its <audio> element, kept across re-renders
let dirty = false;
let home = null; // GET /home: floors, areas, entities with their state, groups
let hubStats = null; // GET /stats: this hub
let bridgeState = null; // the retained xiaozhi/bridge/state, from the stream
const edges = new Map(); // edge id -> its retained bridge/edges/<id> payload, from the stream
const hubs = new Map(); // hub id -> its retained bridge/hubs/<id>/state payload, from the stream
// Pending activations: read once (GET /activations) when the fleet page opens, then kept live
// by the stream's activation frames (pending, approved, rejected, expired).
const pending = new Map(); // "device_id client_id" -> the listing's entry, plus expires_at (ms)
// Log lines from the stream (the hub's bridge/hubs/<id>/log, each edge's bridge/edges/<id>/log),
// oldest first, at most MAX_LOG_LINES: a busy hub never grows the page's memory.
const MAX_LOG_LINES = 1000;
const logLines = [];
const logSources = new Set(); // "hub <id>", "edge <id>": the source filter's choices
const LEVELS = { debug: 0, info: 1, warning: 2, error: 3, exception: 3, critical: 4 };
const LOG_TOPIC = /\/bridge\/(hubs|edges)\/([^/]+)\/log$/;
const LOG_OWN_FIELDS = new Set(["level", "event", "timestamp", "edge_id"]);
// The fleet table keeps one row per device and updates only the rows whose device changed:
// a fleet of 10,000 is built once, not on every frame (docs/hub.md, the dashboard).
const rows = new Map(); // id -> <tr>
const touched = new Set(); // ids whose row must be refreshed
let fleetStale = true; // a device came or went, or the search changed: re-filter and re-order
let shownIds = [];

// ------------------------------------------------------------------ REST
async function api(path, init = {}) {
  const headers = { "X-API-Key": localStorage.getItem(KEY) || "", ...(init.headers || {}) };
  if (init.body) headers["Content-Type"] = "application/json";
  const res = await fetch(`/api/v1${path}`, { ...init, headers });
  const body = await res.json();
  if (!body.success) throw Object.assign(new Error(body.error.message), { code: body.error.code, status: res.status });
  return body;
}

// ------------------------------------------------------------------ sign in
async function signIn(key) {
  localStorage.setItem(KEY, key);
  try {
    const body = await api("/devices");
    devices.clear();
    for (const d of body.data) devices.set(d.id, d);
    fleetStale = true;
  } catch (err) {
    if (err.status === 401) localStorage.removeItem(KEY);
    showSignIn(err.message);
    return;
  }
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("nav").hidden = false;
  stream?.close();
  stream = new Stream({ apiKey: key, topics: ["#"], onData, onState, onDropped: resync });
  stream.open();
  route();
}

/** The hub skipped frames this page read too slowly: the fleet is read again from REST, so a
 * status whose frame was skipped does not leave a device shown as it was. */
async function resync() {
  try {
    const body = await api("/devices");
    for (const d of body.data) {
      const known = devices.get(d.id);
      if (known) Object.assign(known, d);
      else devices.set(d.id, d);
    }
    fleetStale = true;
    changed();
  } catch (err) {
    console.warn("fleet not read again after skipped frames:", err.message);
  }
}

function showSignIn(error = "") {
  for (const id of [...PAGES, "nav"]) $(id).hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = error;
  $("key").focus();
}

function onState(state, detail = "") {
  const live = $("live");
  live.textContent = state === "live" ? `live ${detail}` : state;
  live.className = `live state-${state}`;
  if (state === "refused") { localStorage.removeItem(KEY); stream.close(); showSignIn(detail); }
}

// ------------------------------------------------------------------ the stream
const STATUS_FIELDS = new Set(["status", "device_id", "timestamp", "transport", "edge_id", "firmware_version", "simulated"]);

function device(id) {
  let d = devices.get(id);
  if (!d) {
    d = { id, name: id, area: null, area_name: null, status: null, telemetry: {}, sensors: {} };
    devices.set(id, d);
    fleetStale = true;
    api(`/devices/${encodeURIComponent(id)}`) // its name and area: the registry's
      .then((body) => { Object.assign(d, body.data); touch(id); changed(); })
      .catch(() => {});
  }
  touched.add(id);
  return d;
}

/** The device was heard from at `timestamp` (the message's, else now). Real firmware sends
 * its status only on connecting: without this a busy device showed its connect time. A
 * replayed (retained) message older than what is known does not take last seen back. */
function seen(d, timestamp) {
  const at = timestamp || new Date().toISOString();
  if (!d.last_seen || !(Date.parse(at) < Date.parse(d.last_seen))) d.last_seen = at;
}

/** Any message naming a known device refreshes its last seen; status, sensor and connect
 * messages do it in their own case (they also make the device known). */
const HEARD_KINDS = new Set(["device_events", "voice_command_events", "device_voice_command"]);

function onData(msg) {
  const p = msg.payload;
  if (HEARD_KINDS.has(msg.kind) && p && typeof p === "object") {
    const id = msg.device_id || p.device_id;
    if (id && devices.has(id)) { seen(devices.get(id), p.timestamp); touch(id); }
  }
  switch (msg.kind) {
    case "status": {
      if (!msg.device_id) break;
      if (p === null) { forget(msg.device_id); break; } // retained status cleared: forgotten
      if (!p) break;
      const d = device(msg.device_id);
      d.status = p.status;
      for (const f of ["transport", "edge_id", "firmware_version", "simulated"]) if (p[f] != null) d[f] = p[f];
      // everything else a status carries is telemetry, merged as the registry merges it
      // (GET /devices): no field read once over REST stays stale while statuses come
      for (const [f, v] of Object.entries(p)) if (!STATUS_FIELDS.has(f) && v != null) { d.telemetry[f] = v; record(d.id, f, v); }
      seen(d, p.timestamp);
      break;
    }
    case "sensor": {
      if (!p || !msg.device_id) break;
      const d = device(msg.device_id);
      d.sensors[msg.sensor_type] = { value: p.value, unit: p.unit, timestamp: p.timestamp };
      record(msg.device_id, msg.sensor_type, p.value);
      seen(d, p.timestamp);
      break;
    }
    case "device_connected":
    case "device_disconnected": {
      if (!p?.device_id) break;
      const d = device(p.device_id);
      d.status = msg.kind === "device_connected" ? "connected" : "disconnected";
      if (p.transport) d.transport = p.transport;
      seen(d, p.timestamp);
      remember(p.device_id, msg.kind, p);
      break;
    }
    case "device_edit": // renamed or moved (PATCH /devices/{id}, or a bridge request)
      if (!p?.id || !devices.has(p.id)) break;
      if (p.removed) { forget(p.id); break; }
      Object.assign(device(p.id), p);
      if (![$("edit-name"), $("edit-area")].includes(document.activeElement)) editing = null; // not while typing
      break;
    case "bridge_state":
      bridgeState = p;
      break;
    case "bridge_edge":
      if (msg.edge_id) { if (p) edges.set(msg.edge_id, p); else edges.delete(msg.edge_id); }
      break;
    case "bridge_hub": // one replica's own state: its monitor connection's birth and will
      if (msg.hub_id) { if (p) hubs.set(msg.hub_id, p); else hubs.delete(msg.hub_id); }
      break;
    case "activation": // a device's setup call made it pending; approved, rejected, expired
      if (p?.device_id) activation(p);
      break;
    case "log":
      keepLog(msg.topic, p);
      if (currentRoute()[0] !== "logs") return; // nothing else on screen shows it
      break;
    case "entity_state":
      if (home && msg.entity_id) {
        const entity = home.entities.find((e) => e.entity_id === msg.entity_id);
        if (entity) entity.state = p;
      }
      break;
    case "voice_command_events":
    case "device_voice_command":
      if (p?.device_id) step(p.device_id, "voice_command", p);
      if (p?.audio_duration_ms != null) reloadKept(); // heard as speech: its audio may be kept
      break;
    case "device_events": {
      if (!msg.device_id || !p) break;
      if (VOICE_STEPS.has(msg.event_type)) step(msg.device_id, msg.event_type, p);
      if (msg.event_type === "mcp_tools" && Array.isArray(p.tools)) tools.set(msg.device_id, p.tools);
      if (msg.event_type === "action_result") reloadHome(); // an entity's state may have changed
      remember(msg.device_id, msg.event_type, p);
      break;
    }
    default:
      return;
  }
  changed();
}

/** One step of an utterance: its steps share the voice command's message_id (the hub makes
 * one when the command had none: then the device's latest utterance still waiting for its
 * answer takes the step). */
function step(deviceId, type, payload) {
  let key = payload.message_id;
  if (!key || (type !== "voice_command" && !utterances.has(key))) {
    const open = [...utterances.entries()].reverse()
      .find(([, u]) => u.device_id === deviceId && !u.steps.some((s) => s.step === "response"));
    key = open ? open[0] : key || `${deviceId}-${Date.now()}-${Math.random()}`;
  }
  const utterance = utterances.get(key) || { device_id: deviceId, steps: [] };
  // The hub's clock only: a step without a timestamp gets none (mixing in the browser's
  // clock gave negative step times).
  utterance.steps.push({ step: type, at: Date.parse(payload.timestamp) || null, payload });
  if (utterance.seen === undefined) utterance.seen = Date.now();
  utterances.set(key, utterance);
  if (utterances.size > MAX_UTTERANCES) {
    const oldest = utterances.keys().next().value;
    utterances.delete(oldest);
    const audio = players.get(oldest);
    if (audio) { URL.revokeObjectURL(audio.src); players.delete(oldest); }
  }
}

/** The steps before the voice command, when the hub heard it as speech: how long the device
 * spoke and how long speech recognition took (seed 003's fields of the voice_command). */
function speechSteps(heard) {
  if (!heard) return [];
  const lines = [];
  if (heard.audio_duration_ms != null) lines.push(`audio ${heard.audio_duration_ms} ms spoken`);
  if (heard.processing_time_ms != null) lines.push(`speech to text ${heard.processing_time_ms} ms`);
  return lines;
}

/** The intent step: how long the hub took to recognise the intent and plan (its response's
 * intent_ms). */
function intentStep(response) {
  return response?.intent_ms != null ? [`intent ${response.intent_ms} ms`] : [];
}

function renderVoice() {
  const rows = [...utterances.values()].reverse().map((u) => {
    const stamped = u.steps.map((s) => s.at).filter((at) => at !== null);
    const first = stamped.length ? Math.min(...stamped) : u.seen;
    // a step the hub sent without a time (a firmware device's voice command) shows its name
    const time = (s) => (s.at === null ? s.step : `${s.step} +${s.at - first} ms`);
    const of = (type) => u.steps.filter((s) => s.step === type).map((s) => s.payload);
    const [heard] = of("voice_command"), [response] = of("response");
    const results = of("action_result").map((r) => `${r.action?.action} ${r.action?.entity_id}: ${r.status}`);
    return el("tr", {},
      el("td", { class: "seen", title: new Date(first).toISOString() }, ago(new Date(first).toISOString())),
      el("td", {}, el("a", { href: `#/device/${encodeURIComponent(u.device_id)}` }, u.device_id)),
      el("td", { class: "heard" }, heard?.command ?? response?.stt ?? ""),
      el("td", { class: "intent" }, response ? response.intent || "(not understood)" : "…"),
      el("td", { class: "actions" }, results.join("\n") || (response ? "none" : "…")),
      el("td", { class: "answer" }, response?.text ?? "…"),
      el("td", { class: "steps" }, [...speechSteps(heard), ...intentStep(response), ...u.steps.map(time)].join("\n")),
      el("td", { class: "audio" }, audioCell(heard)));
  });
  $("utterances").replaceChildren(...rows);
}

/** What the audio cell offers: "play" only for an utterance whose audio this hub keeps (a
 * typed phrase, a demo device's text, another replica's utterance have none here). */
function audioCell(heard) {
  const id = heard?.message_id;
  if (id && (keptAudio.has(id) || players.has(id))) return player(id);
  const why = heard?.audio_duration_ms != null ? "not kept here" : "text: no audio";
  return el("span", { class: "muted", title: "the hub keeps the audio of the last 50 utterances it transcribed itself" }, heard ? why : "");
}

let keptTimer = 0;
/** The ids of the utterances this hub keeps the audio of (GET /utterances), read when the
 * Voice page opens and after a voice command heard as speech. */
function reloadKept() {
  if (currentRoute()[0] !== "voice" || keptTimer) return;
  keptTimer = setTimeout(async () => {
    keptTimer = 0;
    try {
      const { data } = await api("/utterances");
      keptAudio.clear();
      for (const id of data) keptAudio.add(id);
    } catch { return; }
    changed();
  }, 200);
}

/** The play button of an utterance the hub transcribed; once pressed, its <audio> element (the
 * hub's WAV, fetched with the key: an <audio src> cannot send a header). */
function player(messageId) {
  const kept = players.get(messageId);
  if (kept) return kept;
  return el("button", { type: "button", class: "play", onclick: async (e) => {
    const cell = e.target.parentNode;
    try {
      const res = await fetch(`/api/v1/utterances/${encodeURIComponent(messageId)}/audio`,
        { headers: { "X-API-Key": localStorage.getItem(KEY) || "" } });
      if (!res.ok) throw new Error(res.status === 404 ? "not kept by this hub" : `HTTP ${res.status}`);
      const audio = el("audio", { controls: "", src: URL.createObjectURL(await res.blob()) });
      players.set(messageId, audio);
      cell.replaceChildren(audio);
      audio.play().catch(() => {}); // a browser may want a second click: the controls are there
    } catch (err) { cell.replaceChildren(el("span", { class: "muted" }, err.message)); }
  } }, "▶ play");
}

// ------------------------------------------------------------------ listen live (listen.js)
function toggleListen() {
  if (listener) { stopListening(); return; }
  const [, id] = currentRoute();
  listener = new Listener(id, localStorage.getItem(KEY) || "", showListener);
  listener.start();
  $("listen").textContent = "Stop";
}

function stopListening() {
  if (!listener) return;
  const done = listener;
  listener = null;
  done.stop();
  showListener(done);
}

function showListener(l) {
  if (listener && listener !== l) return; // a stopped one's late close
  $("listen-state").textContent = l.state;
  $("listen-packets").textContent = l.packets;
  $("listen-decoded").textContent = l.decoded;
  $("listen-lost").textContent = l.lost;
  $("listen-level").value = Math.min(1, l.level * 4); // speech RMS is rarely above 0.25
  $("listen-problem").textContent = l.problem || "";
  $("listen-notice").textContent = l.notice || "";
  $("listen-how").textContent = l.how;
  if (l.state !== "listening" && l.state !== "connecting" && listener === l) listener = null;
  if (!listener) $("listen").textContent = "Listen";
}

function record(id, name, value) {
  if (typeof value !== "number") return;
  const series = history.get(id) || {};
  (series[name] ||= []).push(value);
  if (series[name].length > MAX_POINTS) series[name].shift();
  history.set(id, series);
}

/** A small line chart of a series (an SVG polyline), or nothing under two points. */
function sparkline(values = []) {
  if (values.length < 2) return "";
  const w = 120, h = 24, min = Math.min(...values), span = Math.max(...values) - min || 1;
  const points = values.map((v, i) => `${(i * w) / (values.length - 1)},${h - 2 - ((v - min) * (h - 4)) / span}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "spark");
  svg.dataset.points = values.length;
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

function touch(id) { touched.add(id); }

function forget(id) {
  devices.delete(id);
  fleetStale = true;
}

/** One event of the device, newest first; ``older`` (what the hub held when the page opened)
 * goes after those already listed. */
function remember(id, type, payload, older = false) {
  const list = events.get(id) || [];
  const entry = { type, at: payload.timestamp || (older ? null : new Date().toISOString()), payload };
  if (older) list.push(entry); else list.unshift(entry);
  list.length = Math.min(list.length, MAX_EVENTS);
  events.set(id, list);
}

function changed() {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(() => { dirty = false; render(); });
}

// ------------------------------------------------------------------ rendering
function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (Number.isNaN(s)) return iso;
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

/** A wire timestamp as the local time of day (with the date when not today); "" if none. */
function clock(iso) {
  const at = iso ? new Date(iso) : null;
  if (!at || Number.isNaN(at.getTime())) return "";
  const time = at.toLocaleTimeString([], { hour12: false });
  return at.toDateString() === new Date().toDateString() ? time : `${at.toLocaleDateString()} ${time}`;
}

const GIST_SKIP = new Set(["event_type", "device_id", "timestamp", "message_id", "session_id", "edge_id"]);

/** The few fields that say what an event was (the whole payload is its cell's tooltip). */
function gist(type, p) {
  if (!p || typeof p !== "object") return String(p ?? "");
  const params = (o) => Object.entries(o || {}).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
  switch (type) {
    case "command_result":
      return [p.command, p.status, p.error, p.result != null ? (typeof p.result === "string" ? p.result : JSON.stringify(p.result)) : ""].filter(Boolean).join(" · ");
    case "command": return [p.command, params(p.parameters)].filter(Boolean).join(" · ");
    case "mcp_tools": return `${(p.tools || []).length} tools`;
    case "voice_command": return `heard "${p.command ?? ""}"`;
    case "response": return `says "${p.text ?? ""}"${p.intent ? ` (${p.intent})` : ""}`;
    case "action": return `${p.action?.action ?? ""} ${p.action?.entity_id ?? ""}`.trim();
    case "action_result": return `${p.action?.action ?? ""} ${p.action?.entity_id ?? ""}: ${p.status ?? ""}${p.failure ? ` (${p.failure})` : ""}`;
    case "device_connected":
    case "device_disconnected": return [p.transport, p.edge_id && `via ${p.edge_id}`, p.reason].filter(Boolean).join(" · ");
    default:
      return Object.entries(p).filter(([k, v]) => !GIST_SKIP.has(k) && v != null)
        .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ").slice(0, 200);
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node[k] = v; else node.setAttribute(k, v);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(c ?? ""))));
  return node;
}

function matches(d, text, status) {
  if (status && (d.status || "never") !== status) return false;
  if (!text) return true;
  const hay = [d.id, d.name, d.area, d.area_name, d.transport, d.firmware_version, d.status, d.edge_id].join(" ").toLowerCase();
  return text.toLowerCase().split(/\s+/).every((word) => hay.includes(word));
}

const FLEET_COLUMNS = 8;

function fleetRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.device = id;
  for (let i = 0; i < FLEET_COLUMNS; i++) tr.append(document.createElement("td"));
  const link = document.createElement("a");
  link.href = `#/device/${encodeURIComponent(id)}`;
  link.textContent = id;
  tr.cells[0].append(link);
  tr.cells[6].className = "seen";
  rows.set(id, tr);
  return tr;
}

function setText(td, text) { if (td.textContent !== text) td.textContent = text; }

/** One device's row brought up to date, cell by cell (only what changed is written). */
function fillRow(tr, d) {
  const c = tr.cells;
  setText(c[1], d.name || "");
  setText(c[2], d.area_name || d.area || "");
  const status = `status ${d.status || "never"}`;
  if (c[3].className !== status) c[3].className = status;
  setText(c[3], d.status || "never seen");
  setText(c[4], d.transport || "");
  setText(c[5], d.firmware_version || "");
  if (c[6].title !== (d.last_seen || "")) c[6].title = d.last_seen || "";
  setText(c[6], ago(d.last_seen));
  setText(c[7], d.simulated ? "simulated" : "");
}

const OVERSCAN = 20; // rows built above and below the screen
let rowHeight = 0; // measured on the first row shown
let windowShown = ""; // "first:last:count" of the rows now in the table

function spacer(rowsHidden) {
  const tr = el("tr", { class: "spacer" }, el("td", { colspan: String(FLEET_COLUMNS) }));
  tr.style.height = `${rowsHidden * rowHeight}px`;
  return tr;
}

/** The fleet table, virtualised: it holds only the rows on screen (and OVERSCAN either side),
 * with one spacer row above and below standing for the others, so 10,000 devices cost what a
 * screenful does. The list is filtered and ordered again only when a device came or went or
 * the search changed (or, while a search is on, a device changed); each frame then brings
 * the rows on screen up to date, writing only the cells that changed. */
function renderFleet() {
  const text = $("search").value.trim(), status = $("status-filter").value;
  if (fleetStale || ((text || status) && touched.size)) {
    const ids = [];
    for (const d of devices.values()) if (matches(d, text, status)) ids.push(d.id);
    ids.sort();
    for (const id of rows.keys()) if (!devices.has(id)) rows.delete(id);
    if (ids.length !== shownIds.length || ids.some((id, i) => id !== shownIds[i])) windowShown = "";
    shownIds = ids;
    fleetStale = false;
  }
  touched.clear();
  const body = $("devices");
  const height = rowHeight || 28;
  const top = body.getBoundingClientRect().top;
  const first = Math.max(0, Math.floor(-top / height) - OVERSCAN);
  const last = Math.min(shownIds.length, first + Math.ceil(window.innerHeight / height) + 2 * OVERSCAN);
  const key = `${first}:${last}:${shownIds.length}`;
  if (key !== windowShown) {
    const visible = shownIds.slice(first, last).map((id) => rows.get(id) || fleetRow(id));
    body.replaceChildren(...(first ? [spacer(first)] : []), ...visible,
      ...(last < shownIds.length ? [spacer(shownIds.length - last)] : []));
    windowShown = key;
  }
  for (let i = first; i < last; i++) fillRow(rows.get(shownIds[i]), devices.get(shownIds[i]));
  if (!rowHeight && last > first) {
    rowHeight = rows.get(shownIds[first]).getBoundingClientRect().height || 0;
    if (rowHeight && (first || last < shownIds.length)) { windowShown = ""; changed(); } // spacers at the real height
  }
  let online = 0;
  for (const d of devices.values()) if (d.status === "connected") online++;
  $("count").textContent = `${shownIds.length} of ${devices.size} devices, ${online} connected`;
}

function searchChanged() { fleetStale = true; renderFleet(); }

function table(rows) {
  return el("table", { class: "kv" }, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v ?? "")))));
}

let editing = null; // the device whose name and area the edit form holds

function renderDevice(id) {
  const d = devices.get(id);
  $("device-title").textContent = !d ? `${id}: unknown device` : d.name && d.name !== id ? `${d.name} (${id})` : id;
  $("edit-form").hidden = !d;
  if (!d) { $("device-info").replaceChildren(); return; }
  fillEditForm(d);
  $("device-info").replaceChildren(table([
    ["status", d.status || "never seen"], ["area", d.area_name || d.area], ["transport", d.transport],
    ["firmware", d.firmware_version], ["edge", d.edge_id], ["model", d.model],
    ["last seen", `${ago(d.last_seen)} (${d.last_seen || "-"})`], ["simulated", d.simulated ? "yes" : "no"]]));
  const telemetry = Object.entries(d.telemetry || {});
  const sensors = Object.entries(d.sensors || {}).map(([k, r]) => [k, `${r.value}${r.unit ? " " + r.unit : ""}`]);
  const series = history.get(id) || {};
  $("device-values").replaceChildren(telemetry.length + sensors.length
    ? el("table", { class: "kv" }, ...[...telemetry, ...sensors].map(([k, v]) => el("tr", { "data-name": k },
      el("th", {}, k), el("td", {}, String(v ?? "")), el("td", {}, sparkline(series[k])))))
    : el("p", { class: "muted" }, "No telemetry or sensor reading yet."));
  const names = tools.get(id) || [];
  $("device-tools").replaceChildren(names.length
    ? el("ul", {}, ...names.map((t) => el("li", {}, el("code", {}, t))))
    : el("p", { class: "muted" }, "None announced since the hub started (firmware announces them over MCP when it connects)."));
  const list = events.get(id) || [];
  $("device-events").replaceChildren(list.length
    ? el("table", { class: "list events" }, ...list.map((e) => el("tr", { "data-type": e.type },
      el("td", { class: "time", title: e.at || "" }, clock(e.at)),
      el("td", { class: "type" }, e.type),
      el("td", { class: "gist", title: JSON.stringify(e.payload) }, gist(e.type, e.payload)))))
    : el("p", { class: "muted" }, "No event since this page opened."));
}

// ------------------------------------------------------------------ logs
function keepLog(topic, p) {
  const m = LOG_TOPIC.exec(topic || "");
  if (!m || !p || typeof p !== "object") return;
  const source = `${m[1] === "hubs" ? "hub" : "edge"} ${m[2]}`;
  const details = Object.entries(p).filter(([k]) => !LOG_OWN_FIELDS.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  const level = String(p.level || "info");
  const line = { at: p.timestamp || new Date().toISOString(), level, source, event: String(p.event || ""), details };
  line.text = `${line.event} ${details} ${source}`.toLowerCase();
  logLines.push(line);
  if (logLines.length > MAX_LOG_LINES) logLines.shift();
  if (!logSources.has(source)) {
    logSources.add(source);
    const select = $("log-source"), chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "every source"),
      ...[...logSources].sort().map((s) => el("option", { value: s }, s)));
    select.value = chosen;
  }
}

/** The lines kept, newest first, through the level, source and search filters. */
function renderLogs() {
  const least = LEVELS[$("log-level").value] ?? 0, source = $("log-source").value;
  const words = $("log-search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = [];
  for (let i = logLines.length - 1; i >= 0; i--) {
    const l = logLines[i];
    if ((LEVELS[l.level] ?? 1) < least || (source && l.source !== source)) continue;
    if (words.length && !words.every((w) => l.text.includes(w))) continue;
    shown.push(el("tr", { class: `level-${l.level}`, "data-level": l.level, "data-source": l.source },
      el("td", { class: "time", title: l.at }, l.at.replace("T", " ").replace(/\.\d+Z?$|Z$/, "")),
      el("td", { class: "level" }, l.level), el("td", {}, l.source), el("td", { class: "event" }, l.event),
      el("td", { class: "details" }, l.details)));
  }
  $("log-lines").replaceChildren(...shown);
  $("log-count").textContent = `${shown.length} of ${logLines.length} lines`;
}

function render() {
  const [page, arg] = currentRoute();
  if (page === "fleet") renderFleet(); // elsewhere, the rows touched wait until it is shown
  else if (page === "device") renderDevice(arg);
  else if (page === "voice") renderVoice();
  else if (page === "home") renderHome();
  else if (page === "bridge") renderBridge();
  else if (page === "logs") renderLogs();
}

// ------------------------------------------------------------------ routes
function currentRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("device/")) return ["device", decodeURIComponent(hash.slice(7))];
  if (["try", "voice", "home", "bridge", "logs"].includes(hash)) return [hash];
  return ["fleet"];
}

function route() {
  if (!localStorage.getItem(KEY)) return showSignIn();
  const [page] = currentRoute();
  for (const id of PAGES) $(id).hidden = id !== page;
  $("command-result").textContent = "";
  $("edit-result").textContent = "";
  stopListening(); // another page, or another device
  editing = null;
  if (page === "fleet") loadPending();
  if (page === "home" || page === "device") loadHome();
  if (page === "bridge") loadStats();
  if (page === "voice") reloadKept();
  if (page === "device") loadDevice(currentRoute()[1]);
  render();
}

/** What the hub holds of the device (GET /devices/{id}), for a page opened after the facts:
 * the MCP tools it last announced (firmware does so once, on connecting), and its last
 * telemetry and sensor readings as the chart's first points. The stream brings what follows. */
async function loadDevice(id) {
  let data;
  try { data = (await api(`/devices/${encodeURIComponent(id)}`)).data; } catch { return; }
  if (!tools.has(id) && Array.isArray(data.mcp_tools)) {
    tools.set(id, data.mcp_tools);
    if (!(events.get(id) || []).some((e) => e.type === "mcp_tools")) {
      remember(id, "mcp_tools", { tools: data.mcp_tools, timestamp: data.mcp_tools_at }, true);
    }
  }
  const series = history.get(id) || {};
  for (const [name, value] of Object.entries(data.telemetry || {})) if (!series[name]) record(id, name, value);
  for (const [name, r] of Object.entries(data.sensors || {})) if (!series[name]) record(id, name, r.value);
  changed();
}

// ------------------------------------------------------------------ the home model, the bridge
/** The home model (GET /home): read when its page or a device page opens, and again after an
 * action ran (an action_result event: a state may have changed) while its page is open. */
async function loadHome() {
  try { home = (await api("/home")).data; } catch (err) { home = null; $("home-areas").textContent = `${err.code}: ${err.message}`; return; }
  editing = null; // the area list of the edit form may be new
  render();
}

let homeTimer = 0;
function reloadHome() {
  if (currentRoute()[0] !== "home" || homeTimer) return;
  homeTimer = setTimeout(() => { homeTimer = 0; loadHome(); }, 300);
}

function stateText(state) {
  if (state == null) return "unknown";
  if (typeof state !== "object") return String(state);
  const { state: word, ...rest } = state;
  const extra = Object.entries(rest).map(([k, v]) => `${k} ${v}`).join(", ");
  return [word, extra].filter(Boolean).join(", ") || "{}";
}

function deviceLink(id) {
  const d = devices.get(id);
  const status = d?.status || "never";
  return el("li", { "data-device": id }, el("a", { href: `#/device/${encodeURIComponent(id)}` }, d?.name || id),
    " ", el("span", { class: `status ${status}` }, d?.status || "never seen"));
}

function entityTable(entities) {
  return el("table", { class: "list entities" }, ...entities.map((e) => el("tr", { "data-entity": e.entity_id },
    el("td", {}, el("code", {}, e.entity_id)), el("td", {}, e.name),
    el("td", { class: "state" }, stateText(e.state)),
    el("td", { class: "muted" }, `${e.binding.type}: ${e.binding.target}`))));
}

/** Floors, then their areas, each with its devices (live from the stream: an area set on a
 * device page moves it at once) and its entities with their state and binding; then what is
 * in no area, and the groups. */
function renderHome() {
  if (!home) return;
  const byArea = new Map();
  for (const d of devices.values()) {
    const key = d.area || "";
    if (!byArea.has(key)) byArea.set(key, []);
    byArea.get(key).push(d.id);
  }
  const area = (a) => {
    const ids = (byArea.get(a.id) || []).sort();
    const entities = home.entities.filter((e) => e.area === a.id);
    return el("div", { class: "area", "data-area": a.id }, el("h3", {}, a.name, " ", el("span", { class: "muted" }, a.id)),
      ids.length ? el("ul", { class: "devices" }, ...ids.map(deviceLink)) : el("p", { class: "muted" }, "No xiaozhi device."),
      entities.length ? entityTable(entities) : el("p", { class: "muted" }, "No entity."));
  };
  const floors = [...home.floors, { id: null, name: "No floor" }];
  const sections = floors.map((f) => {
    const areas = home.areas.filter((a) => (a.floor || null) === f.id);
    return areas.length ? el("section", { class: "floor" }, el("h2", {}, f.name), el("div", { class: "areas" }, ...areas.map(area))) : null;
  }).filter(Boolean);
  const loose = home.entities.filter((e) => !e.area);
  const homeless = (byArea.get("") || []).sort();
  sections.push(el("section", { class: "floor" }, el("h2", {}, "In no area"),
    el("div", { class: "areas" }, el("div", { class: "area", "data-area": "" },
      homeless.length ? el("ul", { class: "devices" }, ...homeless.slice(0, 200).map(deviceLink)) : el("p", { class: "muted" }, "No device."),
      homeless.length > 200 ? el("p", { class: "muted" }, `and ${homeless.length - 200} more (see the fleet)`) : "",
      loose.length ? entityTable(loose) : ""))));
  sections.push(el("section", {}, el("h2", {}, "Groups"), home.groups.length
    ? el("table", { class: "list" }, ...home.groups.map((g) => el("tr", { "data-group": g.id },
      el("td", {}, g.name), el("td", { class: "muted" }, g.id), el("td", {}, g.members.join(", ")))))
    : el("p", { class: "muted" }, "No group.")));
  $("home-areas").replaceChildren(...sections);
}

async function loadStats() {
  try { hubStats = (await api("/stats")).data; } catch (err) { $("bridge-hub").textContent = `${err.code}: ${err.message}`; return; }
  for (const [id, state] of Object.entries(hubStats.edges)) if (!edges.has(id)) edges.set(id, { state, edge_id: id });
  render();
}

/** The hub (its /stats, read when the page opens and on Refresh), every hub replica (their
 * retained bridge/hubs/<id>/state, live from the stream) and every edge (their retained
 * bridge/edges/<id>, live from the stream), with the devices each one carries. */
function renderBridge() {
  const shared = bridgeState?.state || "unknown";
  const h = hubStats;
  $("bridge-hub").replaceChildren(el("table", { class: "list" },
    el("tr", {}, el("th", {}, "hub"), el("th", {}, "state"), el("th", {}, "version"), el("th", {}, "up"),
      el("th", {}, "MQTT"), el("th", {}, "devices"), el("th", {}, "stream"), el("th", {}, "intents")),
    el("tr", { "data-hub": h?.hub_id || "" },
      el("td", {}, h?.hub_id || "…"), el("td", { class: `status ${h?.state === "online" ? "connected" : "disconnected"}` }, h?.state || "…"),
      el("td", {}, h?.version || ""), el("td", {}, h ? duration(h.uptime_seconds) : ""),
      el("td", {}, h ? (h.mqtt.connected ? `connected (${h.mqtt.connects} connects)` : "disconnected") : ""),
      el("td", {}, h ? `${h.devices.connected} of ${h.devices.known} connected` : ""),
      el("td", {}, h ? `${h.stream.sessions.length} sessions` : ""),
      el("td", {}, h ? (h.intents_loaded ? "loaded" : "loading") : ""))));
  const hubIds = [...new Set([...hubs.keys(), ...(h?.hub_id ? [h.hub_id] : [])])].sort();
  $("bridge-hubs").replaceChildren(...hubIds.map((id) => {
    const r = hubs.get(id) || {}, state = r.state || "unknown", online = state === "online";
    const started = Date.parse(r.started_at);
    return el("tr", { "data-replica": id }, el("td", {}, id === h?.hub_id ? `${id} (this hub)` : id),
      el("td", { class: `status ${online ? "connected" : "disconnected"}` }, state),
      el("td", { class: "version" }, r.version || ""),
      el("td", { class: "up" }, online && started ? duration((Date.now() - started) / 1000) : ""),
      el("td", { class: "devices" }, online && r.devices ? `${r.devices.connected} of ${r.devices.known} connected` : ""),
      el("td", {}, online && r.stream_sessions != null ? `${r.stream_sessions} sessions` : ""),
      el("td", {}, online && r.mqtt_connects != null ? String(r.mqtt_connects) : ""),
      el("td", { class: "seen", title: r.timestamp || "" }, r.timestamp ? ago(r.timestamp) : ""));
  }));
  $("bridge-shared").textContent = shared;
  $("bridge-shared").className = `status ${shared === "online" ? "connected" : "disconnected"}`;
  const carried = new Map();
  for (const d of devices.values()) {
    if (!d.edge_id) continue;
    const c = carried.get(d.edge_id) || { connected: 0, known: 0 };
    c.known++;
    if (d.status === "connected") c.connected++;
    carried.set(d.edge_id, c);
  }
  const ids = [...new Set([...edges.keys(), ...carried.keys()])].sort();
  $("bridge-edges").replaceChildren(...ids.map((id) => {
    const e = edges.get(id) || {}, c = carried.get(id) || { connected: 0, known: 0 };
    const state = e.state || "unknown";
    return el("tr", { "data-edge": id }, el("td", {}, id),
      el("td", { class: `status ${state === "online" ? "connected" : "disconnected"}` }, state),
      el("td", { class: "seen", title: e.timestamp || "" }, e.timestamp ? ago(e.timestamp) : ""),
      el("td", {}, `${c.connected} connected, ${c.known} seen`));
  }));
  $("bridge-edges-none").hidden = ids.length > 0;
}

function duration(seconds) {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ------------------------------------------------------------------ forms
function fillEditForm(d) {
  if (editing === d.id) return; // never overwrite what the operator is typing
  editing = d.id;
  $("edit-name").value = d.name || "";
  const select = $("edit-area");
  const areas = home?.areas || [];
  select.replaceChildren(el("option", { value: "" }, "(no area)"),
    ...areas.map((a) => el("option", { value: a.id }, a.name)));
  if (d.area && !areas.some((a) => a.id === d.area)) select.append(el("option", { value: d.area }, d.area));
  select.value = d.area || "";
}

/** Rename and/or move the device (PATCH /devices/{id}: the bridge's device/rename and
 * device/area); only what the operator changed is sent. */
async function editDevice(event) {
  event.preventDefault();
  const [, id] = currentRoute();
  const d = devices.get(id), out = $("edit-result");
  const body = {};
  const name = $("edit-name").value.trim(), area = $("edit-area").value || null;
  if (name && name !== d?.name) body.name = name;
  if (area !== (d?.area || null)) body.area = area;
  if (!Object.keys(body).length) { out.textContent = "nothing changed"; out.className = "muted"; return; }
  try {
    const { data, message } = await api(`/devices/${encodeURIComponent(id)}`, { method: "PATCH", body: JSON.stringify(body) });
    Object.assign(device(id), data);
    out.textContent = message; out.className = "ok";
  } catch (err) { out.textContent = `${err.code}: ${err.message}`; out.className = "error"; }
  editing = null;
  changed();
}

function sendCommand(event) {
  event.preventDefault();
  let parameters;
  try { parameters = JSON.parse($("command-parameters").value || "{}"); } catch (err) {
    $("command-result").textContent = `parameters: not JSON (${err.message})`;
    $("command-result").className = "error";
    return;
  }
  command($("command-name").value, parameters);
}

function restart() {
  const [, id] = currentRoute();
  if (confirm(`Restart ${id}?`)) command("reboot", {});
}

async function command(name, parameters) {
  const [, id] = currentRoute();
  const out = $("command-result");
  try {
    const body = await api(`/devices/${encodeURIComponent(id)}/command`,
      { method: "POST", body: JSON.stringify({ command: name, parameters }) });
    out.textContent = `${body.message}: ${body.data.command} on ${body.data.topic} (message ${body.data.message_id})`;
    out.className = "ok";
  } catch (err) { out.textContent = `${err.code}: ${err.message}`; out.className = "error"; }
}

/** Pending activations: the list (GET /activations) read when the fleet page opens; from
 * then on the stream's activation frames add and remove entries as they happen. */
async function loadPending() {
  let listed;
  try { listed = (await api("/activations")).data; } catch (err) {
    $("pending-result").textContent = `${err.code}: ${err.message}`;
    return;
  }
  pending.clear();
  for (const p of listed) keepPending(p);
  renderPending();
}

function keepPending(p) {
  pending.set(`${p.device_id} ${p.client_id}`, { ...p, expires_at: Date.now() + p.expires_in_seconds * 1000 });
}

/** One activation frame: a new pending device is listed, any other change removes it. */
function activation(p) {
  if (p.change === "pending") keepPending(p);
  else pending.delete(`${p.device_id} ${p.client_id}`);
  renderPending();
}

function renderPending() {
  const now = Date.now();
  for (const [key, p] of pending) if (p.expires_at <= now) pending.delete(key); // the hub expires it too
  const list = [...pending.values()].sort((a, b) => a.created_at - b.created_at);
  $("pending").hidden = list.length === 0;
  $("pending-summary").textContent = list.length
    ? `${list.length} device${list.length > 1 ? "s" : ""}: approve the code it says or shows`
    : "none";
  $("pending-list").replaceChildren(...list.map((p) => el("tr", { "data-code": p.code },
    el("td", {}, el("strong", {}, p.code)), el("td", {}, p.device_id), el("td", {}, p.client_id),
    el("td", {}, p.user_agent || ""), el("td", {}, `${Math.max(0, Math.round((p.expires_at - now) / 60000))} min`),
    el("td", {}, el("button", { type: "button", class: "approve", onclick: () => decide("approve", p) }, "Approve"),
      " ", el("button", { type: "button", class: "reject", onclick: () => decide("reject", p) }, "Reject")))));
}

async function decide(verdict, p) {
  const out = $("pending-result");
  try {
    const { message } = await api(`/activations/${verdict}`,
      { method: "POST", body: JSON.stringify({ code: p.code }) });
    out.textContent = `${p.device_id}: ${message}`; out.className = "ok";
    activation({ ...p, change: verdict === "approve" ? "approved" : "rejected" }); // its frame follows
  } catch (err) { out.textContent = `${err.code}: ${err.message}`; out.className = "error"; }
}

async function removeDevices(filter, what) {
  const out = $("remove-result");
  if (!confirm(`Forget every learnt device that is ${what}? A device that comes back is learnt again.`)) return;
  try {
    const { data, message } = await api("/devices/remove", { method: "POST", body: JSON.stringify(filter) });
    for (const id of data.removed) forget(id);
    out.textContent = message; out.className = "ok";
  } catch (err) { out.textContent = `${err.code}: ${err.message}`; out.className = "error"; }
  renderFleet();
}

async function tryPhrase(event) {
  event.preventDefault();
  const out = $("try-result");
  const request = { text: $("phrase").value };
  if ($("phrase-device").value) request.device_id = $("phrase-device").value;
  try {
    const { data } = await api("/voice/test", { method: "POST", body: JSON.stringify(request) });
    out.replaceChildren(table([
      ["intent", data.intent || "(none: not understood)"],
      ["slots", JSON.stringify(data.slots)],
      ["answer", data.response],
      ["actions", data.actions.map((a) => JSON.stringify(a)).join("\n") || "none"],
      ["executed", data.executed ? "yes" : "no: a test runs nothing"],
      ["error", data.error || ""]]));
    out.dataset.intent = data.intent || "";
  } catch (err) { out.replaceChildren(el("p", { class: "error" }, `${err.code}: ${err.message}`)); }
}

$("signin-form").onsubmit = (e) => { e.preventDefault(); signIn($("key").value.trim()); };
$("signout").onclick = () => { localStorage.removeItem(KEY); stream?.close(); stream = null; onState("offline"); showSignIn(); };
$("search").oninput = searchChanged;
$("status-filter").onchange = searchChanged;
$("edit-form").onsubmit = editDevice;
$("command-form").onsubmit = sendCommand;
$("restart").onclick = restart;
$("listen").onclick = toggleListen;
$("bridge-refresh").onclick = loadStats;
$("remove-simulated").onclick = () => removeDevices({ simulated: true }, "simulated");
$("remove-stale").onclick = () => {
  const hours = Number($("stale-hours").value);
  removeDevices({ not_seen_for_seconds: hours * 3600 }, `disconnected and not seen for ${hours} h`);
};
$("try-form").onsubmit = tryPhrase;
for (const id of ["log-level", "log-source"]) $(id).onchange = renderLogs;
$("log-search").oninput = renderLogs;
$("log-clear").onclick = () => { logLines.length = 0; renderLogs(); };
window.onhashchange = route;
window.addEventListener("scroll", () => { if (currentRoute()[0] === "fleet") changed(); }, { passive: true });
window.addEventListener("resize", () => changed());
// "5 s ago" ages on screen; the data itself only ever comes from the stream.
setInterval(() => {
  for (const td of document.querySelectorAll("td.seen[title]")) td.textContent = ago(td.title);
  if ([...pending.values()].some((p) => p.expires_at <= Date.now())) renderPending(); // a code ran out
}, 5000);

const saved = localStorage.getItem(KEY);
if (saved) signIn(saved); else showSignIn();
