// mcp-orch operator console: plain DOM, no framework, no build step.
// Signed in with an HttpOnly session cookie; every change sends X-CSRF-Token.
"use strict";

const state = { csrf: null, overview: null, events: null, route: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, credentials: "same-origin",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401 && path !== "/console/login") { showSignIn(); }
  if (!r.ok) throw Object.assign(new Error(data.error || r.statusText), { status: r.status, data });
  return data;
}

function fmtDuration(s) {
  if (s === undefined || s === null) return "";
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
const fmtMs = (v) => (v === null || v === undefined ? "–" : `${v} ms`);
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "never");
const stateBadge = (s) => h("span", { class: `state state-${s}`, "data-state": s }, s);

// --- sign-in -------------------------------------------------------------------
function showSignIn(message) {
  stopEvents();
  state.csrf = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("live").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  try {
    const r = await api("POST", "/console/login", { token: input.value });
    input.value = "";
    state.csrf = r.csrf;
    started();
  } catch (e) {
    input.value = "";
    document.getElementById("sign-in-error").textContent = e.message;
  }
}

async function signOut() {
  try { await api("POST", "/console/logout"); } catch (e) { /* signed out anyway */ }
  showSignIn("Signed out.");
}

function started() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  startEvents();
  route();
}

// --- live events --------------------------------------------------------------------
function startEvents() {
  stopEvents();
  const live = document.getElementById("live");
  const es = new EventSource("/console/events");
  es.addEventListener("overview", (e) => {
    state.overview = JSON.parse(e.data);
    live.hidden = false; live.className = "live"; live.textContent = "live";
    refresh();
  });
  es.addEventListener("signed_out", () => showSignIn("Your console session ended; sign in again."));
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
  state.events = es;
}
function stopEvents() { if (state.events) { state.events.close(); state.events = null; } }

// --- charts: hand-written SVG sparklines ------------------------------------------------
function sparkline(samples, width = 260, height = 46) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("width", width); svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const n = 180;  // 15 minutes of 5-second samples
  const pts = samples.slice(-n);
  const line = (values, cls) => {
    const max = Math.max(1e-9, ...values);
    const d = values.map((v, i) => {
      const x = width - (pts.length - 1 - i) * (width / (n - 1));
      const y = height - 2 - (v / max) * (height - 4);
      return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    }).join("");
    const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
    p.setAttribute("class", cls); p.setAttribute("d", d || "M0,0");
    svg.append(p);
  };
  if (pts.length) {
    line(pts.map((s) => s.rps), "rps");
    line(pts.map((s) => s.p99_ms || 0), "p99");
    line(pts.map((s) => s.eps), "err");
  }
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = "last 15 minutes: requests/s (blue), p99 ms (amber), errors/s (red)";
  svg.append(title);
  return svg;
}

// --- routing ------------------------------------------------------------------------------
function route() {
  const hash = location.hash || "#/";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  state.route = parts;
  const view = document.getElementById("view");
  view.replaceChildren();
  if (parts[0] === "server" && parts.length >= 3) serverPage(view, parts[1], parts[2]);
  else if (parts[0] === "keys") keysPage(view);
  else if (parts[0] === "sessions") sessionsPage(view);
  else if (parts[0] === "audit") auditPage(view);
  else overviewPage(view);
}

let refreshers = [];
function refresh() { for (const f of refreshers) f(state.overview); }
function onOverview(f) { refreshers.push(f); if (state.overview) f(state.overview); }
function resetRefreshers() { refreshers = []; }

function servers(ov) {
  const rows = [];
  for (const [project, body] of Object.entries(ov.projects || {}))
    for (const [name, view] of Object.entries(body.servers || {})) rows.push({ project, name, view });
  return rows;
}

// --- overview -------------------------------------------------------------------------------
function overviewPage(view) {
  resetRefreshers();
  const summary = h("p", { class: "muted" });
  const tbody = h("tbody");
  view.append(h("h2", {}, "Overview"), summary, h("table", { id: "servers" },
    h("thead", {}, h("tr", {}, ["Server", "State", "Restarts", "Uptime", "PID", "Isolation",
      "Sessions", "In flight", "req/s", "err/s", "p50", "p99", "Last 15 min"].map((t) => h("th", {}, t)))),
    tbody),
    h("p", { class: "legend" }, h("span", { class: "rps" }, "— requests/s"),
      h("span", { class: "p99" }, "— p99 latency"), h("span", { class: "err" }, "— errors/s")));
  onOverview((ov) => {
    summary.textContent = `${ov.sessions} live sessions · ${ov.ready ? "ready" : ov.reason} · ` +
      `config ${ov.config || "(store)"} · tracing ${ov.telemetry ? "on" : "off"}`;
    tbody.replaceChildren(...servers(ov).map(({ project, name, view: v }) => {
      const sessions = Object.entries(v.sessions_by_transport || {}).map(([t, c]) => `${t} ${c}`).join(", ") || "0";
      return h("tr", { "data-server": `${project}/${name}` },
        h("td", {}, h("a", { href: `#/server/${encodeURIComponent(project)}/${encodeURIComponent(name)}` }, `${project}/${name}`)),
        h("td", {}, stateBadge(v.state)),
        h("td", { class: "num restarts" }, v.restarts ?? 0),
        h("td", { class: "num" }, fmtDuration(v.uptime_s)),
        h("td", { class: "num pid" }, v.pid ?? "–"),
        h("td", {}, v.isolation || ""),
        h("td", {}, sessions),
        h("td", { class: "num" }, v.in_flight ?? 0),
        h("td", { class: "num" }, v.rps ?? 0), h("td", { class: "num" }, v.eps ?? 0),
        h("td", { class: "num" }, fmtMs(v.p50_ms)), h("td", { class: "num" }, fmtMs(v.p99_ms)),
        h("td", {}, sparkline(v.samples || [])));
    }));
  });
}

// --- a server --------------------------------------------------------------------------------
function serverPage(view, project, name) {
  resetRefreshers();
  const base = `/console/api/servers/${encodeURIComponent(project)}/${encodeURIComponent(name)}`;
  const status = h("div", { id: "server-status" });
  const stderr = h("pre", { id: "stderr" });
  const definition = h("pre", { id: "definition" });
  const tools = h("div", { id: "tools" }, h("p", { class: "muted" }, "Listing tools…"));
  const message = h("p", { id: "action-message", role: "status" });
  const action = (verb) => async () => {
    message.textContent = `${verb}…`;
    try { await api("POST", `${base}/${verb}`); message.textContent = `${verb}: done`; }
    catch (e) { message.textContent = `${verb} failed: ${e.message}`; }
  };
  view.append(h("h2", {}, `${project}/${name}`),
    h("div", { class: "toolbar" },
      h("button", { id: "restart", onclick: action("restart") }, "Restart"),
      h("button", { id: "enable", onclick: action("enable") }, "Enable"),
      h("button", { id: "disable", class: "danger", onclick: action("disable") }, "Disable"), message),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h3", {}, "Status"), status),
      h("div", { class: "card" }, h("h3", {}, "stderr (live)"), stderr)),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h3", {}, "Tools and playground"), tools),
      h("div", { class: "card" }, h("h3", {}, "Definition (secrets redacted)"), definition)));
  onOverview((ov) => {
    const v = ((ov.projects[project] || {}).servers || {})[name];
    if (!v) { status.textContent = "not configured"; return; }
    status.replaceChildren(h("table", {}, h("tbody", {},
      [["State", stateBadge(v.state)], ["PID", v.pid ?? "–"], ["Uptime", fmtDuration(v.uptime_s)],
       ["Restarts", v.restarts ?? 0], ["Last exit", v.last_exit || "–"],
       ["Last exit code", v.last_exit_code ?? "–"], ["Protocol", v.protocol_version || "–"],
       ["Server", v.server_info ? `${v.server_info.name} ${v.server_info.version || ""}` : "–"],
       ["req/s · p50 · p99", `${v.rps ?? 0} · ${fmtMs(v.p50_ms)} · ${fmtMs(v.p99_ms)}`]]
        .map(([k, val]) => h("tr", {}, h("th", {}, k), h("td", {}, val))))),
      sparkline(v.samples || [], 420, 60));
    stderr.textContent = (v.stderr_tail || []).join("\n") || "(nothing yet)";
  });
  api("GET", base).then((d) => { definition.textContent = JSON.stringify(d.definition, null, 2); })
    .catch((e) => { definition.textContent = e.message; });
  api("GET", `${base}/tools`).then((d) => {
    tools.replaceChildren(...(d.tools.length ? d.tools.map((t) => toolForm(base, t))
      : [h("p", { class: "muted" }, "No tools.")]));
  }).catch((e) => { tools.replaceChildren(h("p", { class: "error" }, `Could not list tools: ${e.message}`)); });
}

function fieldFor(name, schema, required) {
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  const id = `arg-${name}`;
  let input;
  if (Array.isArray(schema.enum)) {
    input = h("select", { id, name }, required ? null : h("option", { value: "" }, "—"),
      schema.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
    input.dataset.kind = "enum";
  } else if (type === "boolean") {
    input = h("input", { id, name, type: "checkbox" }); input.dataset.kind = "boolean";
  } else if (type === "number" || type === "integer") {
    input = h("input", { id, name, type: "number", step: type === "integer" ? "1" : "any", required });
    input.dataset.kind = type;
  } else if (type === "object" || type === "array" || !type) {
    input = h("textarea", { id, name, placeholder: type === "array" ? "[ ]" : "{ }" }); input.dataset.kind = "json";
  } else {
    input = h("input", { id, name, type: "text", required }); input.dataset.kind = "string";
  }
  return h("label", {}, h("span", {}, name + (required ? " *" : "")), input,
    schema.description ? h("small", { class: "muted" }, ` ${schema.description}`) : null);
}

function readArgs(form) {
  const args = {};
  for (const el of form.querySelectorAll("[data-kind]")) {
    const kind = el.dataset.kind;
    if (kind === "boolean") { args[el.name] = el.checked; continue; }
    if (el.value === "") continue;
    if (kind === "number" || kind === "integer") args[el.name] = Number(el.value);
    else if (kind === "json" || kind === "enum") args[el.name] = JSON.parse(el.value);
    else args[el.name] = el.value;
  }
  return args;
}

function toolForm(base, tool) {
  const schema = tool.inputSchema || {};
  const required = new Set(schema.required || []);
  const result = h("pre", { class: "result", hidden: true });
  const timing = h("p", { class: "timing muted" });
  const bar = h("div", {}); const progress = h("div", { class: "progress", hidden: true }, bar);
  const form = h("form", { "data-tool": tool.name },
    Object.entries(schema.properties || {}).map(([n, s]) => fieldFor(n, s || {}, required.has(n))),
    h("button", { type: "submit", class: "primary" }, "Call"), progress, timing, result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let args;
    try { args = readArgs(form); } catch (err) { timing.textContent = `Invalid JSON: ${err.message}`; return; }
    result.hidden = true; progress.hidden = false; bar.style.width = "5%";
    timing.textContent = "Calling…";
    try {
      const r = await fetch(`${base}/call`, { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf || "" },
        body: JSON.stringify({ tool: tool.name, arguments: args }) });
      if (!r.ok) { const d = await r.json().catch(() => ({})); throw new Error(d.error || r.statusText); }
      const reader = r.body.getReader(); const decoder = new TextDecoder(); let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const ev = JSON.parse(data);
          if (ev.progress) {
            const p = ev.progress; const pct = p.total ? Math.min(100, (100 * p.progress) / p.total) : 50;
            bar.style.width = `${pct}%`;
            timing.textContent = `progress ${p.progress}${p.total ? " / " + p.total : ""} · ${ev.elapsed_ms} ms`;
          }
          if (ev.reply) {
            bar.style.width = "100%";
            const failed = "error" in ev.reply || (ev.reply.result && ev.reply.result.isError);
            timing.textContent = `${failed ? "failed" : "done"} in ${ev.elapsed_ms} ms`;
            result.textContent = JSON.stringify(ev.reply.result ?? ev.reply.error, null, 2);
            result.hidden = false;
          }
        }
      }
    } catch (err) { timing.textContent = `Call failed: ${err.message}`; }
    progress.hidden = true;
  });
  return h("details", { class: "tool", "data-tool": tool.name },
    h("summary", {}, tool.name, h("span", { class: "muted" }, tool.description ? ` — ${tool.description}` : "")), form);
}

// --- keys -------------------------------------------------------------------------------------
function keysPage(view) {
  resetRefreshers();
  const tbody = h("tbody");
  const shown = h("div", { id: "new-key" });
  const projects = h("select", { id: "key-project", name: "project" });
  const load = async () => {
    const keys = await api("GET", "/console/api/keys");
    tbody.replaceChildren(...keys.map((k) => h("tr", { "data-prefix": k.prefix },
      h("td", {}, h("code", {}, k.prefix)), h("td", {}, k.project), h("td", {}, k.name),
      h("td", {}, fmtTime(k.created_at)), h("td", {}, k.expires_at ? fmtTime(k.expires_at) : "never"),
      h("td", { class: "key-state" }, k.revoked ? "revoked" : "active"),
      h("td", {}, k.revoked ? "" : h("button", { class: "danger revoke", onclick: async () => {
        if (!confirm(`Revoke ${k.prefix}? Its sessions end.`)) return;
        await api("DELETE", `/console/api/keys/${encodeURIComponent(k.prefix)}`); load();
      } }, "Revoke")))));
  };
  const form = h("form", { id: "create-key" },
    h("label", {}, h("span", {}, "Project"), projects),
    h("label", {}, h("span", {}, "Name"), h("input", { id: "key-name", name: "name", value: "console" })),
    h("label", {}, h("span", {}, "Expires in"), h("select", { id: "key-expiry", name: "expiry" },
      h("option", { value: "" }, "never"), h("option", { value: "3600" }, "1 hour"),
      h("option", { value: "86400" }, "1 day"), h("option", { value: "2592000" }, "30 days"))),
    h("button", { type: "submit", class: "primary" }, "Create key"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const expiry = document.getElementById("key-expiry").value;
    try {
      const k = await api("POST", "/console/api/keys", { project: projects.value,
        name: document.getElementById("key-name").value, expires_in_s: expiry ? Number(expiry) : null });
      shown.replaceChildren(h("p", {}, "The new key — shown this once; copy it now:"),
        h("div", { class: "secret", id: "created-key" }, k.key),
        h("p", { class: "muted" }, `expires: ${k.expires_at ? fmtTime(k.expires_at) : "never"}`));
      load();
    } catch (err) { shown.replaceChildren(h("p", { class: "error" }, err.message)); }
  });
  view.append(h("h2", {}, "API keys"), h("div", { class: "card" }, form, shown),
    h("table", { id: "keys" }, h("thead", {}, h("tr", {}, ["Prefix", "Project", "Name", "Created", "Expires", "State", ""]
      .map((t) => h("th", {}, t)))), tbody));
  onOverview((ov) => {
    const names = Object.keys(ov.projects || {});
    if (projects.options.length !== names.length)
      projects.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
  });
  load();
}

// --- sessions -------------------------------------------------------------------------------
function sessionsPage(view) {
  resetRefreshers();
  const tbody = h("tbody");
  const load = async () => {
    const rows = await api("GET", "/console/api/sessions");
    tbody.replaceChildren(...rows.map((s) => h("tr", { "data-session": s.id },
      h("td", {}, h("code", {}, s.id)), h("td", {}, `${s.project}/${s.server}`), h("td", {}, s.transport),
      h("td", {}, s.client ? `${s.client.name || "?"} ${s.client.version || ""}` : "–"),
      h("td", {}, s.protocol_version || "–"), h("td", { class: "num" }, fmtDuration(s.age_s)),
      h("td", { class: "num" }, s.in_flight), h("td", {}, s.key_prefix ? h("code", {}, s.key_prefix) : "–"),
      h("td", {}, h("button", { class: "danger end-session", onclick: async () => {
        await api("DELETE", `/console/api/sessions/${encodeURIComponent(s.id)}`); load();
      } }, "End")))));
  };
  view.append(h("h2", {}, "Live sessions"), h("div", { class: "toolbar" }, h("button", { onclick: load }, "Refresh")),
    h("table", { id: "sessions" }, h("thead", {}, h("tr", {}, ["Session", "Server", "Transport", "Client",
      "Protocol", "Age", "In flight", "Key", ""].map((t) => h("th", {}, t)))), tbody));
  load();
  const timer = setInterval(() => { if (state.route[0] === "sessions") load(); else clearInterval(timer); }, 3000);
}

// --- audit ------------------------------------------------------------------------------------
function auditPage(view) {
  resetRefreshers();
  const tbody = h("tbody");
  const field = (id, label) => h("label", {}, h("span", {}, label), h("input", { id, name: id }));
  const form = h("form", { id: "audit-filter", class: "toolbar" }, field("project", "Project"),
    field("actor", "Actor"), field("action", "Action"), h("button", { type: "submit" }, "Filter"));
  const load = async () => {
    const q = new URLSearchParams();
    for (const k of ["project", "actor", "action"]) { const v = document.getElementById(k).value; if (v) q.set(k, v); }
    const rows = await api("GET", `/console/api/audit?${q}`);
    tbody.replaceChildren(...rows.map((e) => h("tr", {}, h("td", {}, fmtTime(e.at)), h("td", {}, e.actor),
      h("td", {}, e.action), h("td", {}, e.target), h("td", {}, e.detail))));
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  view.append(h("h2", {}, "Audit log"), form, h("table", { id: "audit" },
    h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Target", "Detail"].map((t) => h("th", {}, t)))), tbody));
  load();
}

// --- start --------------------------------------------------------------------------------------
window.addEventListener("hashchange", () => { if (state.csrf) route(); });
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("sign-in-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", signOut);
  try { state.csrf = (await api("GET", "/console/api/session")).csrf; started(); }
  catch (e) { showSignIn(); }
});
