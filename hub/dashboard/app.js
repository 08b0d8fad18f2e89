// The hub's dashboard: sign in once with an API key (kept in localStorage), read the fleet
// once over REST, then follow it live over the stream (stream.js). Pages are hash routes:
// #/ the fleet, #/device/<id> one device, #/try the phrase tester. No build step, no CDN.
import { Stream } from "./stream.js";

const KEY = "xiaozhi_api_key";
const MAX_EVENTS = 50;
const $ = (id) => document.getElementById(id);
const devices = new Map(); // id -> the REST shape of a device, kept up to date by the stream
const events = new Map(); // id -> recent events, newest first
const tools = new Map(); // id -> MCP tool names the device announced
const history = new Map(); // id -> {telemetry field or sensor type: [numbers]}, since the page opened
const MAX_POINTS = 60;
const utterances = new Map(); // message_id -> {device_id, steps: [{step, at, payload}]}, oldest first
const MAX_UTTERANCES = 100;
const VOICE_STEPS = new Set(["voice_command", "action", "action_result", "response"]);
let stream = null;
let dirty = false;

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
  } catch (err) {
    if (err.status === 401) localStorage.removeItem(KEY);
    showSignIn(err.message);
    return;
  }
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("nav").hidden = false;
  stream?.close();
  stream = new Stream({ apiKey: key, topics: ["#"], onData, onState });
  stream.open();
  route();
}

function showSignIn(error = "") {
  for (const id of ["fleet", "device", "voice", "try", "nav"]) $(id).hidden = true;
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
const TELEMETRY = ["uptime", "memory_usage", "cpu_usage", "wifi_signal", "free_heap"];

function device(id) {
  let d = devices.get(id);
  if (!d) {
    d = { id, name: id, area: null, area_name: null, status: null, telemetry: {}, sensors: {} };
    devices.set(id, d);
    api(`/devices/${encodeURIComponent(id)}`) // its name and area: the registry's
      .then((body) => { Object.assign(d, body.data); changed(); })
      .catch(() => {});
  }
  return d;
}

function onData(msg) {
  const p = msg.payload;
  switch (msg.kind) {
    case "status": {
      if (!msg.device_id) break;
      if (p === null) { devices.delete(msg.device_id); break; } // retained status cleared: forgotten
      if (!p) break;
      const d = device(msg.device_id);
      d.status = p.status;
      for (const f of ["transport", "edge_id", "firmware_version", "simulated"]) if (p[f] != null) d[f] = p[f];
      for (const f of TELEMETRY) if (p[f] != null) { d.telemetry[f] = p[f]; record(d.id, f, p[f]); }
      d.last_seen = p.timestamp || new Date().toISOString();
      break;
    }
    case "sensor": {
      if (!p || !msg.device_id) break;
      device(msg.device_id).sensors[msg.sensor_type] = { value: p.value, unit: p.unit, timestamp: p.timestamp };
      record(msg.device_id, msg.sensor_type, p.value);
      break;
    }
    case "device_connected":
    case "device_disconnected": {
      if (!p?.device_id) break;
      const d = device(p.device_id);
      d.status = msg.kind === "device_connected" ? "connected" : "disconnected";
      if (p.transport) d.transport = p.transport;
      d.last_seen = p.timestamp || new Date().toISOString();
      remember(p.device_id, msg.kind, p);
      break;
    }
    case "voice_command_events":
    case "device_voice_command":
      if (p?.device_id) step(p.device_id, "voice_command", p);
      break;
    case "device_events": {
      if (!msg.device_id || !p) break;
      if (VOICE_STEPS.has(msg.event_type)) step(msg.device_id, msg.event_type, p);
      if (msg.event_type === "mcp_tools" && Array.isArray(p.tools)) tools.set(msg.device_id, p.tools);
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
  utterance.steps.push({ step: type, at: Date.parse(payload.timestamp) || Date.now(), payload });
  utterances.set(key, utterance);
  if (utterances.size > MAX_UTTERANCES) utterances.delete(utterances.keys().next().value);
}

function renderVoice() {
  const rows = [...utterances.values()].reverse().map((u) => {
    const first = u.steps[0].at;
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
      el("td", { class: "steps" }, u.steps.map((s) => `${s.step} +${s.at - first} ms`).join("\n")));
  });
  $("utterances").replaceChildren(...rows);
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

function remember(id, type, payload) {
  const list = events.get(id) || [];
  list.unshift({ type, at: payload.timestamp || new Date().toISOString(), payload });
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

function renderFleet() {
  const text = $("search").value.trim(), status = $("status-filter").value;
  const all = [...devices.values()].sort((a, b) => a.id.localeCompare(b.id));
  const shown = all.filter((d) => matches(d, text, status));
  const online = all.filter((d) => d.status === "connected").length;
  $("count").textContent = `${shown.length} of ${all.length} devices, ${online} connected`;
  $("devices").replaceChildren(...shown.map((d) => el("tr", { "data-device": d.id },
    el("td", {}, el("a", { href: `#/device/${encodeURIComponent(d.id)}` }, d.id)),
    el("td", {}, d.name), el("td", {}, d.area_name || d.area || ""),
    el("td", { class: `status ${d.status || "never"}` }, d.status || "never seen"),
    el("td", {}, d.transport || ""), el("td", {}, d.firmware_version || ""),
    el("td", { class: "seen", title: d.last_seen || "" }, ago(d.last_seen)),
    el("td", {}, d.simulated ? "simulated" : ""))));
}

function table(rows) {
  return el("table", { class: "kv" }, ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v ?? "")))));
}

function renderDevice(id) {
  const d = devices.get(id);
  $("device-title").textContent = !d ? `${id}: unknown device` : d.name && d.name !== id ? `${d.name} (${id})` : id;
  if (!d) { $("device-info").replaceChildren(); return; }
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
    : el("p", { class: "muted" }, "None announced since this page opened (firmware sends them over MCP when it connects)."));
  const list = events.get(id) || [];
  $("device-events").replaceChildren(list.length
    ? el("table", {}, ...list.map((e) => el("tr", {}, el("td", { class: "seen", title: e.at }, ago(e.at)),
      el("td", {}, e.type), el("td", {}, el("code", {}, JSON.stringify(e.payload))))))
    : el("p", { class: "muted" }, "No event since this page opened."));
}

function render() {
  const [page, arg] = currentRoute();
  if (page === "device") renderDevice(arg);
  else if (page === "fleet") renderFleet();
  else if (page === "voice") renderVoice();
}

// ------------------------------------------------------------------ routes
function currentRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("device/")) return ["device", decodeURIComponent(hash.slice(7))];
  if (hash === "try" || hash === "voice") return [hash];
  return ["fleet"];
}

function route() {
  if (!localStorage.getItem(KEY)) return showSignIn();
  const [page] = currentRoute();
  for (const id of ["fleet", "device", "voice", "try"]) $(id).hidden = id !== page;
  $("command-result").textContent = "";
  if (page === "fleet") loadPending();
  render();
}

// ------------------------------------------------------------------ forms
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

/** Pending activations (GET /activations): the hub publishes no event for them, so they are
 * read when the fleet page opens and on "Refresh". */
async function loadPending() {
  let pending = [];
  try { pending = (await api("/activations")).data; } catch (err) {
    $("pending-result").textContent = `${err.code}: ${err.message}`;
  }
  $("pending").hidden = pending.length === 0;
  $("pending-summary").textContent = pending.length
    ? `${pending.length} device${pending.length > 1 ? "s" : ""}: approve the code it says or shows`
    : "none";
  $("pending-list").replaceChildren(...pending.map((p) => el("tr", { "data-code": p.code },
    el("td", {}, el("strong", {}, p.code)), el("td", {}, p.device_id), el("td", {}, p.client_id),
    el("td", {}, p.user_agent || ""), el("td", {}, `${Math.round(p.expires_in_seconds / 60)} min`),
    el("td", {}, el("button", { type: "button", class: "approve", onclick: () => decide("approve", p) }, "Approve"),
      " ", el("button", { type: "button", class: "reject", onclick: () => decide("reject", p) }, "Reject")))));
}

async function decide(verdict, pending) {
  const out = $("pending-result");
  try {
    const { message } = await api(`/activations/${verdict}`,
      { method: "POST", body: JSON.stringify({ code: pending.code }) });
    out.textContent = `${pending.device_id}: ${message}`; out.className = "ok";
  } catch (err) { out.textContent = `${err.code}: ${err.message}`; out.className = "error"; }
  await loadPending();
}

async function removeDevices(filter, what) {
  const out = $("remove-result");
  if (!confirm(`Forget every learnt device that is ${what}? A device that comes back is learnt again.`)) return;
  try {
    const { data, message } = await api("/devices/remove", { method: "POST", body: JSON.stringify(filter) });
    for (const id of data.removed) devices.delete(id);
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
$("search").oninput = renderFleet;
$("status-filter").onchange = renderFleet;
$("command-form").onsubmit = sendCommand;
$("restart").onclick = restart;
$("pending-refresh").onclick = loadPending;
$("remove-simulated").onclick = () => removeDevices({ simulated: true }, "simulated");
$("remove-stale").onclick = () => {
  const hours = Number($("stale-hours").value);
  removeDevices({ not_seen_for_seconds: hours * 3600 }, `disconnected and not seen for ${hours} h`);
};
$("try-form").onsubmit = tryPhrase;
window.onhashchange = route;
// "5 s ago" ages on screen; the data itself only ever comes from the stream.
setInterval(() => { for (const td of document.querySelectorAll("td.seen[title]")) td.textContent = ago(td.title); }, 5000);

const saved = localStorage.getItem(KEY);
if (saved) signIn(saved); else showSignIn();
