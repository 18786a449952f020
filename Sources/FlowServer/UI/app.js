// FlowKit dashboard: a small single-page app over the JSON API (/api/v1). No framework, no CDN.
// The admin token is kept in sessionStorage and sent in the Authorization header only (never in
// a URL; no cookies, so no CSRF). Live updates come from /api/v1/events/stream (server-sent
// events read with fetch, so the header can carry the token).
"use strict";
const $ = (sel, el = document) => el.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const STATES = {
  success: "✓", failed: "✗", running: "▶", queued: "…", up_for_retry: "↻", up_for_reschedule: "◔",
  upstream_failed: "⚠", skipped: "⤼", pending: "○", cancelled: "⊘",
};
const token = () => sessionStorage.getItem("flowkit-token");
let page = null;          // the current page: { onChange(change), dispose() }
// A change that arrives while a page loads has no page to tell: the page, once there, reads
// again (a run that ended while its page was loading stayed "running" on it for good).
let changedWhileLoading = false;
let liveAbort = null;

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  let data = null;
  try { data = await r.json(); } catch (_) { /* empty body */ }
  if (!r.ok) {
    const e = new Error((data && data.message) || `${r.status} ${r.statusText}`);
    e.status = r.status; e.code = data && data.error; e.data = data;
    if (r.status === 401 && !opts.quiet) askToken(e.message);
    throw e;
  }
  return data;
}

function sq(state, title, href) {
  const s = state || "pending";
  const tag = href ? "a" : "span";
  return `<${tag} class="sq ${s} s-${s}" role="img" aria-label="${esc(s)}" title="${esc(title || s)}"${href ? ` href="${esc(href)}"` : ""}>${STATES[s] || "?"}</${tag}>`;
}
const stateLabel = (s) => `<span class="state">${sq(s)} ${esc(s)}</span>`;
// A time with its zone: the browser's, or `tz` (a flow's next run is shown in the flow's zone).
// One format with the CLI (`flowctl`): `2026-12-02 06:00:00 UTC`, or in a zone
// `2026-12-02 07:00:00 +01:00` — never the browser's locale, always with its zone.
function fmtTime(iso, tz) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const zone = tz && tz !== "UTC" && tz !== "Etc/UTC" ? tz : "UTC";
  let p;
  try {
    p = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "longOffset" }).formatToParts(d).map((x) => [x.type, x.value]));
  } catch (_) {
    return zone === "UTC" ? d.toISOString() : fmtTime(iso);
  }
  const off = zone === "UTC" ? "UTC" : p.timeZoneName === "GMT" ? "+00:00" : p.timeZoneName.replace("GMT", "");
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${off}`;
}
function fmtDur(sec) {
  if (sec == null || isNaN(sec)) return "—";
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 90) return `${sec.toFixed(1)} s`;
  if (sec < 5400) return `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`;
  return `${(sec / 3600).toFixed(1)} h`;
}
const dur = (a, b) => (a ? ((b ? new Date(b) : new Date()) - new Date(a)) / 1000 : null);

// Cron in words for the common shapes; the expression itself is always shown too.
function cronWords(cron) {
  if (!cron) return "manual";
  const named = { "@hourly": "every hour", "@daily": "every day at 00:00", "@weekly": "every Sunday at 00:00", "@monthly": "on the 1st at 00:00", "@yearly": "every 1 January" };
  if (named[cron]) return named[cron];
  const f = cron.trim().split(/\s+/);
  if (f.length !== 5) return cron;
  const [m, h, dom, mon, dow] = f;
  const pad = (x) => String(x).padStart(2, "0");
  if (/^\d+$/.test(m) && h === "*" && dom === "*" && mon === "*" && dow === "*") return `every hour at :${pad(m)}`;
  if (/^\d+$/.test(m) && /^\*\/\d+$/.test(h) && dom === "*" && mon === "*" && dow === "*") return `every ${h.slice(2)} hours at :${pad(m)}`;
  if (/^\*\/\d+$/.test(m) && h === "*" && dom === "*" && mon === "*" && dow === "*") return `every ${m.slice(2)} minutes`;
  if (/^\d+$/.test(m) && /^\d+$/.test(h) && dom === "*" && mon === "*" && dow === "*") return `every day at ${pad(h)}:${pad(m)}`;
  if (/^\d+$/.test(m) && /^\d+$/.test(h) && dom === "*" && mon === "*" && /^[0-6]$/.test(dow))
    return `every ${["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"][+dow]} at ${pad(h)}:${pad(m)}`;
  return cron;
}

function askToken(why) {
  const d = $("#dialog");
  d.innerHTML = `<form method="dialog" id="tokform"><h2>Sign in</h2>
    <p class="muted">${esc(why || "Paste an API token (an admin token lets you trigger, pause, clear and mark).")}</p>
    <label for="tok">API token</label><input id="tok" type="password" autocomplete="off">
    <div class="toolbar"><button class="primary" value="ok">Sign in</button><button value="cancel" formnovalidate>Cancel</button></div></form>`;
  d.showModal();
  $("#tok").focus();
  $("#tokform").onsubmit = (ev) => {
    if (ev.submitter && ev.submitter.value === "cancel") return;
    const v = $("#tok").value.trim();
    if (v) sessionStorage.setItem("flowkit-token", v);
    updateSignin(); startLive(); route();
  };
}
function updateSignin() {
  const b = $("#signin");
  b.textContent = token() ? "Sign out" : "Sign in";
  b.onclick = () => { if (token()) { sessionStorage.removeItem("flowkit-token"); updateSignin(); startLive(); route(); } else askToken(); };
}

// ---- live updates -------------------------------------------------------------------------
async function startLive() {
  if (liveAbort) liveAbort.abort();
  const ctl = new AbortController();
  liveAbort = ctl;
  let delay = 500, reconnecting = false;
  while (!ctl.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (token()) headers.Authorization = "Bearer " + token();
      const r = await fetch("/api/v1/events/stream", { headers, signal: ctl.signal });
      if (!r.ok || !r.body) throw new Error("stream " + r.status);
      $("#live").className = "live on"; delay = 500;
      if (reconnecting && page && page.refresh) page.refresh();     // catch up on what happened while disconnected
      reconnecting = true;
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          try { const ch = JSON.parse(data); if (page && page.onChange) page.onChange(ch); else changedWhileLoading = true; } catch (_) { }
        }
      }
    } catch (e) { if (ctl.signal.aborted) return; }
    $("#live").className = "live off";
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 10000);
  }
}
// Coalesces bursts of changes into one refresh at most every 300 ms, one at a time: a change
// that comes while a refresh is in flight makes one more after it (two in flight could answer
// out of order and leave the older answer on screen).
function debounced(fn, ms = 300) {
  let t = null, running = false, pending = false;
  const schedule = () => { if (!t) t = setTimeout(go, ms); };
  const go = async () => {
    t = null;
    if (running) { pending = true; return; }
    running = true;
    try { await fn(); } catch (_) { /* the next change tries again */ } finally { running = false; }
    if (pending) { pending = false; schedule(); }
  };
  return schedule;
}

// ---- DAG layout (longest path layering, left to right) -------------------------------------
function dagSVG(tasks, states, link, wide = false) {
  const ids = tasks.map((t) => t.id), byId = new Map(tasks.map((t) => [t.id, t]));
  const layer = new Map();
  const depth = (id, seen = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const t = byId.get(id);
    const d = t && t.upstream.length ? 1 + Math.max(...t.upstream.map((u) => depth(u, seen))) : 0;
    layer.set(id, d); return d;
  };
  ids.forEach((id) => depth(id));
  if (ids.length > 400) return `<p class="muted">${ids.length} tasks: the graph is drawn for flows of up to 400 tasks; the grid shows every one.</p>`;
  const cols = [];
  ids.forEach((id) => { const d = layer.get(id); (cols[d] = cols[d] || []).push(id); });
  const W = wide ? 300 : 170, H = 34, GX = 50, GY = 12, pos = new Map(), cut = wide ? 40 : 20;
  cols.forEach((col, x) => col.forEach((id, y) => pos.set(id, { x: 10 + x * (W + GX), y: 10 + y * (H + GY) })));
  const width = 20 + cols.length * (W + GX), height = 20 + Math.max(...cols.map((c) => c.length)) * (H + GY);
  let edges = "", nodes = "";
  tasks.forEach((t) => t.upstream.forEach((u) => {
    const a = pos.get(u), b = pos.get(t.id); if (!a || !b) return;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    edges += `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>`;
  }));
  tasks.forEach((t) => {
    const p = pos.get(t.id), s = (states && states[t.id]) || "pending";
    const label = t.id.length > cut ? t.id.slice(0, cut - 1) + "…" : t.id;
    const inner = `<rect class="node s-${s}" x="${p.x}" y="${p.y}" width="${W}" height="${H}" fill-opacity="${s === "pending" ? 0 : 0.35}"></rect>
      <text x="${p.x + 8}" y="${p.y + 21}">${STATES[s] || ""} ${esc(label)}${t.mapped ? " [ ]" : ""}</text><title>${esc(t.id)}: ${esc(s)}</title>`;
    nodes += link ? `<a href="${esc(link(t.id))}" data-task="${esc(t.id)}">${inner}</a>` : inner;
  });
  return `<svg class="dag" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="task graph">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="currentColor"/></marker></defs>${edges}${nodes}</svg>`;
}

// ---- pages ----------------------------------------------------------------------------------
// The flow list: search (id, description, tags), tag, last run's state, sort by name, last run or
// next run; paused flows listed apart, after the active ones. Searching redraws from what is
// loaded; the list reloads on run changes.
async function flowsPage(main) {
  let tag = "", q = "", sort = "name", last = "", flows = [], importErrors = [];
  const load = async () => { ({ flows, importErrors } = await api("/api/v1/flows")); render(); };
  const byName = (a, b) => a.flowId.localeCompare(b.flowId);
  const sorts = {
    name: byName,
    last: (a, b) => (b.latestRun ? Date.parse(b.latestRun.at) : -Infinity) - (a.latestRun ? Date.parse(a.latestRun.at) : -Infinity) || byName(a, b),
    next: (a, b) => (a.nextRunAt && !a.isPaused ? Date.parse(a.nextRunAt) : Infinity) - (b.nextRunAt && !b.isPaused ? Date.parse(b.nextRunAt) : Infinity) || byName(a, b),
  };
  const row = (f) => `<tr data-flow="${esc(f.flowId)}"${f.isPaused ? ' class="paused"' : ""}>
        <td><a href="#/flows/${encodeURIComponent(f.flowId)}"><b>${esc(f.flowId)}</b></a>${f.isPaused ? ' <span class="chip">paused</span>' : ""}<div class="muted">${esc(f.description)}</div>${f.tags.map((t) => `<span class="chip">${esc(t)}</span>`).join("")}</td>
        <td>${f.schedule || !f.triggers ? esc(cronWords(f.schedule)) : ""}${f.schedule ? `<div class="mono muted">${esc(f.schedule)} · ${esc(f.timezone)}</div>` : ""}${(f.triggers || []).map((t) => `<div class="muted">${esc(t)}</div>`).join("")}</td>
        <td>${f.isPaused || !f.nextRunAt ? '<span class="muted">—</span>' : esc(fmtTime(f.nextRunAt, f.timezone))}</td>
        <td>${(f.recentRuns || []).slice().reverse().map((r) => sq(r.state, `${r.runId}: ${r.state}`, `#/runs/${encodeURIComponent(r.runId)}`)).join(" ")}</td>
        <td><label><input type="checkbox" class="pause" ${f.isPaused ? "" : "checked"} aria-label="${esc(f.flowId)} active"> ${f.isPaused ? "paused" : "on"}</label></td>
        <td><button class="trigger primary" type="button">Trigger…</button></td></tr>`;
  const render = () => {
    const typing = document.activeElement && document.activeElement.id === "flowq";
    const tags = [...new Set(flows.flatMap((f) => f.tags))].sort();
    const words = q.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = flows.filter((f) => f.isActive && (!tag || f.tags.includes(tag))
      && (!last || (last === "none" ? !f.latestRun : f.latestRun && f.latestRun.state === last))
      && words.every((w) => (f.flowId + " " + f.description + " " + f.tags.join(" ")).toLowerCase().includes(w))).sort(sorts[sort]);
    const active = shown.filter((f) => !f.isPaused), paused = shown.filter((f) => f.isPaused);
    const sel = (id, label, value, options) => `<label>${label} <select id="${id}">${options.map(([v, t]) => `<option value="${esc(v)}" ${v === value ? "selected" : ""}>${esc(t)}</option>`).join("")}</select></label>`;
    main.innerHTML = `<h1>Flows</h1>
      ${(importErrors || []).length ? `<div class="banner" role="alert"><b>${importErrors.length} flow${importErrors.length === 1 ? "" : "s"} could not be registered</b>
        <ul>${importErrors.map((e) => `<li><span class="mono">${esc(e.flowId)}</span>: ${esc(e.message)}</li>`).join("")}</ul></div>` : ""}
      <div class="toolbar"><label>Search <input id="flowq" type="search" value="${esc(q)}" placeholder="id, description or tag" autocomplete="off"></label>
      ${sel("tagf", "Tag", tag, [["", "all"], ...tags.map((t) => [t, t])])}
      ${sel("lastf", "Last run", last, [["", "any"], ["success", "success"], ["failed", "failed"], ["running", "running"], ["queued", "queued"], ["cancelled", "cancelled"], ["none", "never ran"]])}
      ${sel("sortf", "Sort by", sort, [["name", "name"], ["last", "last run"], ["next", "next run"]])}
      <span class="muted">${shown.length} flows${paused.length ? `, ${paused.length} paused` : ""}</span></div>
      <table id="flows"><thead><tr><th>Flow</th><th>Schedule</th><th>Next run</th><th>Last 10 runs</th><th>Active</th><th></th></tr></thead><tbody>
      ${active.map(row).join("") || (paused.length ? "" : '<tr><td colspan="6" class="muted">No flow matches.</td></tr>')}
      ${paused.length ? `</tbody><tbody class="paused-flows"><tr><th colspan="6" scope="rowgroup">Paused</th></tr>${paused.map(row).join("")}` : ""}
      </tbody></table>`;
    const flowq = $("#flowq", main);
    flowq.oninput = debounced(() => { q = flowq.value; render(); }, 150);
    if (typing) { flowq.focus(); flowq.setSelectionRange(flowq.value.length, flowq.value.length); }
    $("#tagf", main).onchange = (e) => { tag = e.target.value; render(); };
    $("#lastf", main).onchange = (e) => { last = e.target.value; render(); };
    $("#sortf", main).onchange = (e) => { sort = e.target.value; render(); };
    main.querySelectorAll("tr[data-flow]").forEach((tr) => {
      const id = tr.dataset.flow;
      $(".pause", tr).onchange = async (e) => {
        try { await api(`/api/v1/flows/${encodeURIComponent(id)}/${e.target.checked ? "unpause" : "pause"}`, { method: "POST" }); }
        catch (err) { alert(err.message); }
        load();
      };
      $(".trigger", tr).onclick = () => triggerDialog(id);
    });
    window.__flowkitRendered = performance.now();   // for the W10 benchmark's measurement
  };
  await load();
  const again = debounced(load, 500);
  return { onChange: (c) => { if (c.channel === "flowkit_runs") again(); }, refresh: load };
}

async function triggerDialog(flowId) {
  const flow = await api(`/api/v1/flows/${encodeURIComponent(flowId)}`);
  const params = (flow.definition && flow.definition.params) || [];
  const d = $("#dialog");
  const input = (p) => {
    const v = p.defaultValue;
    const id = `p-${esc(p.name)}`;
    if (p.kind === "bool") return `<input id="${id}" name="${esc(p.name)}" type="checkbox" ${v ? "checked" : ""}>`;
    if (p.kind === "object" || p.kind === "array") return `<textarea id="${id}" name="${esc(p.name)}" rows="3" class="mono">${esc(v == null ? "" : JSON.stringify(v))}</textarea>`;
    return `<input id="${id}" name="${esc(p.name)}" ${p.kind === "int" || p.kind === "number" ? 'inputmode="decimal"' : ""} value="${esc(v == null ? "" : v)}">`;
  };
  d.innerHTML = `<form class="params" id="trig" novalidate><h2>Trigger ${esc(flowId)}</h2>
    ${params.length ? params.map((p) => `<label for="p-${esc(p.name)}">${esc(p.name)} <span class="muted">(${esc(p.kind)})</span></label>
      ${input(p)}<div class="help">${esc(p.description || "")}${p.defaultValue !== undefined ? ` Default: <span class="mono">${esc(JSON.stringify(p.defaultValue))}</span>` : ""}</div>
      <div class="field-error" data-err="${esc(p.name)}"></div>`).join("") : '<p class="muted">This flow has no params.</p>'}
    <div class="field-error" data-err=""></div>
    <div class="toolbar"><button class="primary" type="submit">Trigger</button><button type="button" id="trig-cancel">Cancel</button></div></form>`;
  d.showModal();
  $("#trig-cancel").onclick = () => d.close();
  $("#trig").onsubmit = async (ev) => {
    ev.preventDefault();
    d.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
    const conf = {}; let bad = false;
    for (const p of params) {
      const el = d.querySelector(`[name="${CSS.escape(p.name)}"]`), raw = el.type === "checkbox" ? el.checked : el.value.trim();
      const fail = (m) => { d.querySelector(`[data-err="${CSS.escape(p.name)}"]`).textContent = m; bad = true; };
      if (raw === "") continue;
      if (p.kind === "int") { if (!/^-?\d+$/.test(raw)) fail(`${p.name} must be a whole number`); else conf[p.name] = parseInt(raw, 10); }
      else if (p.kind === "number") { if (isNaN(Number(raw))) fail(`${p.name} must be a number`); else conf[p.name] = Number(raw); }
      else if (p.kind === "bool") conf[p.name] = raw;
      else if (p.kind === "object" || p.kind === "array") {
        try { const v = JSON.parse(raw); if ((p.kind === "array") !== Array.isArray(v) || typeof v !== "object") fail(`${p.name} must be a JSON ${p.kind}`); else conf[p.name] = v; }
        catch (_) { fail(`${p.name} is not valid JSON`); }
      } else conf[p.name] = raw;
    }
    if (bad) return;
    try {
      const run = await api(`/api/v1/flows/${encodeURIComponent(flowId)}/runs`, { method: "POST", body: { conf } });
      d.close();
      location.hash = `#/runs/${encodeURIComponent(run.runId)}`;
    } catch (e) {
      const named = params.find((p) => e.message.includes("`" + p.name + "`"));
      d.querySelector(`[data-err="${named ? CSS.escape(named.name) : ""}"]`).textContent = e.message;
    }
  };
}

// A grid column's head: the run's duration as a bar coloured by its state (SVG attributes: the
// CSP refuses inline styles), its kind's icon and its logical date.
function runHead(r, maxDur) {
  const d = dur(r.startedAt, r.endedAt) || 0, h = Math.max(2, Math.round((26 * d) / maxDur));
  const day = new Date(r.logicalDate);
  const short = isNaN(day) ? "" : fmtTime(r.logicalDate).slice(5, 16);  // `12-02 06:00`, UTC like every time shown
  return `<button class="runhead" data-run="${esc(r.runId)}" type="button" title="${esc(r.runId)} · ${esc(r.state)} · ${esc(r.triggerKind)} · ${esc(fmtTime(r.logicalDate))} · ${esc(fmtDur(d))}"
    aria-label="run ${esc(r.runId)}, ${esc(r.state)}"><svg class="durbar" width="10" height="28" aria-hidden="true"><rect class="s-${esc(r.state)}" x="1" y="${28 - h}" width="8" height="${h}"></rect></svg>
    <span class="kindicon">${KIND_ICONS[r.triggerKind] || "•"}</span><span class="rundate">${esc(short)}</span></button>`;
}
// The chosen run's details beside its graph.
function selectedHTML(r) {
  if (!r) return "<h2>Graph</h2>";
  return `<h2>Graph <span class="muted">— run <a href="#/runs/${encodeURIComponent(r.runId)}">${esc(r.runId)}</a></span></h2>
    <p class="rundetails" id="rundetails">${stateLabel(r.state)} · ${kindLabel(r.triggerKind)} · logical date ${esc(fmtTime(r.logicalDate))}
      · started ${esc(fmtTime(r.startedAt))} · took ${esc(fmtDur(dur(r.startedAt, r.endedAt)))}${Object.keys(r.conf || {}).length ? ` · conf <span class="mono">${esc(JSON.stringify(r.conf))}</span>` : ""}</p>`;
}

async function flowPage(main, flowId) {
  let stateFilter = "", selected = null, grid = null, flow = null, definitionOpen = false;
  const draw = async () => {
    [flow, grid] = await Promise.all([api(`/api/v1/flows/${encodeURIComponent(flowId)}`),
      api(`/api/v1/flows/${encodeURIComponent(flowId)}/grid?runs=25${stateFilter ? "&state=" + stateFilter : ""}`)]);
    render();
  };
  // Drawing is separate from loading: choosing a run redraws from what is loaded.
  const render = () => {
    const runs = grid.runs.slice().reverse();       // oldest on the left, as in Airflow
    if (!selected || !runs.some((r) => r.runId === selected)) selected = runs.length ? runs[runs.length - 1].runId : null;
    // 25,000 cells: plain strings, no per-cell tooltip (it is made when a cell is pointed at or focused).
    const hrefs = runs.map((r) => `#/runs/${encodeURIComponent(r.runId)}`);
    const cellsByRun = runs.map((r) => grid.cells[r.runId] || {});
    const selIndex = runs.findIndex((r) => r.runId === selected);
    const parts = [];
    grid.tasks.forEach((t, ti) => {
      parts.push(`<tr><th class="task" scope="row">${esc(t.id)}${t.mapped ? ' <span class="muted">[ ]</span>' : ""}</th>`);
      for (let ri = 0; ri < runs.length; ri++) {
        const c = cellsByRun[ri][t.id], st = c ? c.state : "pending";
        parts.push(`<td${ri === selIndex ? ' class="sel"' : ""}><a class="sq ${st} s-${st}" href="${hrefs[ri]}" data-t="${ti}" data-r="${ri}">${STATES[st] || "?"}</a></td>`);
      }
      parts.push("</tr>");
    });
    const rows = parts.join("");
    const maxDur = Math.max(1, ...runs.map((r) => dur(r.startedAt, r.endedAt) || 0));
    const sel = grid.cells[selected] || {};
    const states = Object.fromEntries(Object.entries(sel).map(([k, v]) => [k, v.state]));
    main.innerHTML = `<h1>${esc(flowId)} ${flow.isPaused ? '<span class="chip">paused</span>' : ""}</h1>
      <p class="muted">${esc(flow.description)} · ${esc(flow.schedule || !flow.triggers ? cronWords(flow.schedule) : flow.triggers.join(" · "))}${flow.schedule ? ` (<span class="mono">${esc(flow.schedule)}</span>, ${esc(flow.timezone)})` : ""}
      · next run ${flow.isPaused || !flow.nextRunAt ? "—" : esc(fmtTime(flow.nextRunAt, flow.timezone))} · version ${flow.version}</p>
      <div class="toolbar"><button class="primary" id="trigger" type="button">Trigger…</button>
        ${flow.schedule ? '<button id="backfill" type="button">Backfill…</button>' : ""}
        <button id="pause" type="button">${flow.isPaused ? "Unpause" : "Pause"}</button>
        <label>Runs <select id="statef"><option value="">all</option>${["success", "failed", "running", "queued", "cancelled"].map((s) => `<option ${s === stateFilter ? "selected" : ""}>${s}</option>`).join("")}</select></label>
        <span class="muted">${grid.tasks.length} tasks × ${runs.length} runs</span></div>
      <div class="legend">${Object.keys(STATES).map((s) => `<span>${sq(s)} ${s}</span>`).join("")}</div>
      <h2>Grid</h2>
      <div class="grid-wrap"><table class="grid"><thead><tr><th class="task">task \\ run</th>${runs.map((r) =>
        `<th class="${r.runId === selected ? "sel" : ""}">${runHead(r, maxDur)}</th>`).join("")}</tr></thead>
      <tbody>${rows}</tbody></table></div>
      <div id="graph">${selectedHTML(runs.find((r) => r.runId === selected))}
      ${dagSVG(grid.tasks, states, selected ? (id) => `#/runs/${encodeURIComponent(selected)}?task=${encodeURIComponent(id)}` : null)}</div>
      ${needsHTML(flow.needs)}
      ${definitionHTML(flow, definitionOpen)}`;
    const def = $("#definition", main);
    if (def) def.ontoggle = () => { definitionOpen = def.open; };
    $("#trigger", main).onclick = () => triggerDialog(flowId);
    if ($("#backfill", main)) $("#backfill", main).onclick = () => backfillDialog(flowId, flow);
    $("#pause", main).onclick = async () => { try { await api(`/api/v1/flows/${encodeURIComponent(flowId)}/${flow.isPaused ? "unpause" : "pause"}`, { method: "POST" }); } catch (e) { alert(e.message); } draw(); };
    $("#statef", main).onchange = (e) => { stateFilter = e.target.value; draw(); };
    main.querySelectorAll("button[data-run]").forEach((b) => (b.onclick = () => select(b.dataset.run)));
    const tip = (e) => {
      const a = e.target.closest("a[data-t]");
      if (!a || a.title) return;
      const t = grid.tasks[+a.dataset.t], r = runs[+a.dataset.r], c = cellsByRun[+a.dataset.r][t.id];
      const n = c && Object.values(c.instances || {}).reduce((x, y) => x + y, 0);
      a.title = `${t.id} · ${r.runId}\n${c ? c.state : "no status"}${c && c.tryNumber ? ` · try ${c.tryNumber}` : ""}${c && c.seconds != null ? ` · ${fmtDur(c.seconds)}` : ""}`
        + (n ? `\n${n} mapped: ` + Object.entries(c.instances).map(([s, k]) => `${k} ${s}`).join(", ") : "");
      a.setAttribute("aria-label", a.title);
    };
    $("table.grid", main).addEventListener("mouseover", tip);
    $("table.grid", main).addEventListener("focusin", tip);
    window.__flowkitRendered = performance.now();   // for the W9 benchmark's measurements
  };
  // Choosing a run moves the highlight and redraws the graph; the grid itself stays.
  const select = (runId) => {
    selected = runId;
    const runs = grid.runs.slice().reverse(), col = runs.findIndex((r) => r.runId === runId) + 1;
    const table = $("table.grid", main);
    for (const row of table.rows) for (let i = 1; i < row.cells.length; i++) row.cells[i].classList.toggle("sel", i === col);
    const sel = grid.cells[selected] || {};
    const states = Object.fromEntries(Object.entries(sel).map(([k, v]) => [k, v.state]));
    $("#graph", main).innerHTML = selectedHTML(runs.find((r) => r.runId === selected))
      + dagSVG(grid.tasks, states, (id) => `#/runs/${encodeURIComponent(selected)}?task=${encodeURIComponent(id)}`);
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const again = debounced(draw, 400);
  return {
    onChange: (c) => {
      if (c.channel === "flowkit_runs" || (grid && grid.runs.some((r) => String(r.id) === c.payload))) again();
    },
    refresh: draw,
  };
}

async function runPage(main, runId, query) {
  let run = null, tasks = [], flow = null, chosen = query.get("task"), chosenTry = null, logOffset = 0, logTimer = null, approvals = [];
  let logLines = [], logQ = "", logLevel = "";   // the chosen try's log as read so far, and what it is filtered by
  // The log's element and view outlive a redraw of the page (a live refresh re-reads nothing):
  // they are made again only when another task or try is chosen.
  let logEl = null, logView = null, logKey = null, following = false;
  // A run of thousands of tasks shows them in pages, so that its page never freezes the browser.
  let limit = 500, filter = "";
  const shownTasks = () => {
    const hits = filter ? tasks.filter((t) => t.taskId.includes(filter)) : tasks;
    const page = hits.slice(0, limit);
    if (chosen && !page.some((t) => t.taskId === chosen)) { const c = tasks.find((t) => t.taskId === chosen); if (c) page.push(c); }
    return page;
  };
  let draws = 0;
  const draw = async () => {
    const mine = ++draws;
    const [r, t] = await Promise.all([api(`/api/v1/runs/${encodeURIComponent(runId)}`), api(`/api/v1/runs/${encodeURIComponent(runId)}/tasks`)]);
    if (mine !== draws) return;   // a later draw is on its way: this older answer must not overwrite it
    [run, tasks] = [r, t.tasks];
    if (!flow) flow = await api(`/api/v1/flows/${encodeURIComponent(run.flowId)}`);
    // Only a flow with approval tasks asks for the approvals waiting in its run.
    const asks = flow.definition && flow.definition.tasks.some((t) => t.approval);
    approvals = asks && (run.state === "running" || run.state === "queued")
      ? (await api(`/api/v1/approvals?run_id=${encodeURIComponent(runId)}`)).approvals : [];
    render();
  };
  // A mapped task runs no try itself: its instances' tries (`3 instances · 4 tries, up to 2/3`).
  const tryText = (t) => {
    if (t.mapLength == null) return `${t.tryNumber}/${t.maxTries}`;
    const inst = tasks.filter((x) => x.mapParent === t.taskId);
    if (!inst.length) return "not expanded";
    const total = inst.reduce((n, x) => n + x.tryNumber, 0), most = Math.max(...inst.map((x) => x.tryNumber));
    return `${inst.length} instance${inst.length === 1 ? "" : "s"} · ${total} tr${total === 1 ? "y" : "ies"}, up to ${most}/${t.maxTries}`;
  };
  const render = () => {
    const states = Object.fromEntries(tasks.filter((t) => !t.mapParent).map((t) => [t.taskId, t.state]));
    const gtasks = (flow.definition ? flow.definition.tasks : []).map((t) => ({ id: t.id, upstream: t.upstream, mapped: !!t.mapOver }));
    const live = run.state === "running" || run.state === "queued";
    main.innerHTML = `<h1>Run ${esc(runId)}</h1>
      <p>${stateLabel(run.state)} · flow <a href="#/flows/${encodeURIComponent(run.flowId)}">${esc(run.flowId)}</a> · ${esc(run.triggerKind)}
      ${run.triggeredBy ? ` · started by <a href="#/runs/${encodeURIComponent(run.triggeredBy)}">${esc(run.triggeredBy)}</a>` : ""}
      · logical date ${esc(fmtTime(run.logicalDate))} · took ${esc(fmtDur(dur(run.startedAt, run.endedAt)))}
      ${Object.keys(run.conf || {}).length ? ` · conf <span class="mono">${esc(JSON.stringify(run.conf))}</span>` : ""}</p>
      ${run.stalledReason ? `<div class="banner" role="alert"><b>Stalled:</b> ${esc(run.stalledReason)}</div>` : ""}
      ${approvals.map((a) => approvalHTML(a, false)).join("")}
      <div class="toolbar">${live ? '<button class="danger" id="cancel" type="button">Cancel run</button>' : ""}
        ${!live ? '<button id="clearfailed" type="button">Clear failed tasks</button>' : ""}</div>
      <h2>Graph</h2>${dagSVG(gtasks, states, (id) => `#/runs/${encodeURIComponent(runId)}?task=${encodeURIComponent(id)}`)}
      <h2>Timeline</h2>${gantt(tasks)}
      <h2>Tasks</h2>
      <table><thead><tr><th>Task</th><th>State</th><th>Try</th><th>Worker</th><th>Duration</th><th>Result / error</th><th></th></tr></thead><tbody>
      ${shownTasks().map((t) => `<tr data-task="${esc(t.taskId)}" class="${t.taskId === chosen ? "sel" : ""}">
        <td><a href="#/runs/${encodeURIComponent(runId)}?task=${encodeURIComponent(t.taskId)}" class="logs">${esc(t.taskId)}</a>${t.waitReason ? `<div class="muted">${esc(t.waitReason)}</div>` : ""}</td>
        <td>${stateLabel(t.state)}</td><td>${esc(tryText(t))}</td><td class="mono">${esc(t.worker || "")}</td>
        <td>${esc(fmtDur(dur(t.startedAt, t.endedAt)))}</td>
        <td>${t.error ? `<div class="error">${esc(t.error)}</div>` : ""}${t.result != null ? `<pre class="json mono">${esc(JSON.stringify(t.result, null, 1))}</pre>` : ""}</td>
        <td class="actions">${t.mapParent ? "" : `<button class="clear" type="button" title="clear this task and its downstream tasks: they run again">Clear</button>
          <button class="mark-success" type="button" title="mark success" aria-label="Mark success">✓ Mark</button> <button class="mark-failed danger" type="button" title="mark failed" aria-label="Mark failed">✗ Mark</button>`}</td></tr>`).join("")}
      </tbody></table>
      ${tasks.length > limit ? `<div class="toolbar"><span class="muted">${limit} of ${tasks.length} task instances shown.</span>
        <label>Find <input id="taskq" placeholder="task id" value="${esc(filter)}"></label><button id="more" type="button">Show ${Math.min(tasks.length - limit, 1000)} more</button></div>` : ""}
      <h2 id="logs">Log ${chosen ? `<span class="muted">— ${esc(chosen)}</span>` : ""}</h2>
      ${chosen && !(tasks.find((t) => t.taskId === chosen) || { tries: [] }).tries.length ? '<p class="muted">No try of this task has started yet.</p>'
        : chosen ? `<div class="toolbar"><label>Try <select id="tryf">${(tasks.find((t) => t.taskId === chosen) || { tries: [] }).tries.map((x) =>
        `<option value="${x.tryNumber}" ${x.tryNumber === chosenTry ? "selected" : ""}>${x.tryNumber} · ${esc(x.state)}</option>`).join("")}</select></label>
        <label>Find <input id="logq" type="search" value="${esc(logQ)}" placeholder="text in the log" autocomplete="off"></label>
        <label>Level <select id="loglevel">${["", "ERROR", "WARN", "INFO", "DEBUG"].map((v) => `<option value="${v}" ${v === logLevel ? "selected" : ""}>${v || "all"}</option>`).join("")}</select></label>
        <button type="button" id="logdl">Download</button> <span class="muted" id="logcount"></span></div><div id="logslot"></div>`
        : '<p class="muted">Choose a task to see its log.</p>'}`;
    wireApprovals(main, draw);
    if ($("#more", main)) $("#more", main).onclick = () => { limit += 1000; render(); };
    if ($("#taskq", main)) $("#taskq", main).onchange = (e) => { filter = e.target.value.trim(); render(); };
    const act = async (path, body) => { try { await api(path, { method: "POST", body }); } catch (e) { alert(e.message); } draw(); };
    if ($("#cancel", main)) $("#cancel", main).onclick = () => confirm("Cancel this run?") && act(`/api/v1/runs/${encodeURIComponent(runId)}/cancel`);
    if ($("#clearfailed", main)) $("#clearfailed", main).onclick = () => act(`/api/v1/runs/${encodeURIComponent(runId)}/clear`, { onlyFailed: true });
    main.querySelectorAll("tr[data-task]").forEach((tr) => {
      const id = tr.dataset.task;
      const b = (sel, fn) => { const el = $(sel, tr); if (el) el.onclick = fn; };
      b(".clear", () => act(`/api/v1/runs/${encodeURIComponent(runId)}/clear`, { taskIds: [id] }));
      b(".mark-success", () => act(`/api/v1/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(id)}/mark`, { state: "success" }));
      b(".mark-failed", () => act(`/api/v1/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(id)}/mark`, { state: "failed" }));
    });
    if (chosen) {
      const t = tasks.find((x) => x.taskId === chosen);
      if (chosenTry == null && t) chosenTry = t.tryNumber || 1;
      $("#tryf", main) && ($("#tryf", main).onchange = (e) => { chosenTry = +e.target.value; render(); });
      if ($("#logq", main)) {
        const logq = $("#logq", main);
        logq.oninput = debounced(() => { logQ = logq.value; renderLog(); }, 200);
        $("#loglevel", main).onchange = (e) => { logLevel = e.target.value; renderLog(); };
        $("#logdl", main).onclick = downloadLog;
      }
      const slot = $("#logslot", main);
      if (slot) {
        const key = `${chosen}\u0000${chosenTry}`;
        if (key !== logKey) {
          clearTimeout(logTimer);
          logKey = key; logOffset = 0; logLines = []; following = false;
          logEl = Object.assign(document.createElement("div"), { id: "log", className: "log", tabIndex: 0 });
          logEl.setAttribute("role", "log");
          logView = linesView(logEl);
        }
        slot.replaceWith(logEl);
        renderLog();
        if (!following) followLog();
      }
    }
    window.__flowkitRendered = performance.now();   // for the W9 benchmark's measurements
  };
  // Follows the chosen try's log: pages of new lines are read from the last offset, one after
  // another while pages come full (a long log loads at once), then every second while the try runs.
  const LOG_PAGE = 5000;
  const followLog = async () => {
    clearTimeout(logTimer);
    if (!logEl || !chosen) return;
    const key = logKey;
    following = true;
    let full = false;
    try {
      const page = await api(`/api/v1/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(chosen)}/logs?try=${chosenTry || 1}&offset=${logOffset}&limit=${LOG_PAGE}`);
      if (key !== logKey) return;   // another task or try was chosen meanwhile
      for (const l of page.lines) logLines.push(`${l.at.slice(11, 23)}Z  ${l.line}`);
      if (page.lines.length) renderLog();
      logOffset = page.nextOffset;
      full = page.lines.length >= LOG_PAGE;
    } catch (e) { if (key === logKey) { logView.show([e.message]); following = false; } return; }
    window.__flowkitLogLines = logLines.length;   // for the W9 benchmark
    const t = tasks.find((x) => x.taskId === chosen);
    const runs = t && ["queued", "running", "up_for_retry", "up_for_reschedule"].includes(t.state);
    if (full || runs) logTimer = setTimeout(followLog, full ? 0 : 1000); else following = false;
  };
  // The log filtered by text (matches highlighted) and by level, where a line carries one.
  const LEVEL = /\b(ERROR|WARN(?:ING)?|INFO|DEBUG)\b/i;
  const lineLevel = (l) => { const m = LEVEL.exec(l); return m ? m[1].toUpperCase().replace("WARNING", "WARN") : ""; };
  const renderLog = () => {
    if (!logView) return;
    const count = $("#logcount");
    if (!logQ && !logLevel) { logView.show(logLines); if (count) count.textContent = logLines.length >= 1000 ? `${logLines.length} lines` : ""; return; }
    const q = logQ.toLowerCase();
    const shown = logLines.filter((l) => (!logLevel || lineLevel(l) === logLevel) && (!q || l.toLowerCase().includes(q)));
    const re = q ? new RegExp(`(${logQ.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")})`, "gi") : null;
    // Only the lines in sight are highlighted (the view asks for them).
    logView.show(shown, re ? (l) => l.split(re).map((part, i) => (i % 2 ? `<mark>${esc(part)}</mark>` : esc(part))).join("") : esc);
    if (count) count.textContent = `${shown.length} of ${logLines.length} lines`;
  };
  // The whole try's log as a file: every page read (the token travels in a header, so the file is
  // made here, not by a link to the API).
  const downloadLog = async () => {
    const out = [];
    for (let off = 0; ;) {
      const page = await api(`/api/v1/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(chosen)}/logs?try=${chosenTry || 1}&offset=${off}&limit=${LOG_PAGE}`);
      out.push(...page.lines.map((l) => `${l.at}  ${l.line}`));
      if (!page.lines.length || page.nextOffset === off) break;
      off = page.nextOffset;
    }
    const url = URL.createObjectURL(new Blob([out.join("\n") + "\n"], { type: "text/plain" }));
    const a = Object.assign(document.createElement("a"), { href: url, download: `${runId}-${chosen}-try${chosenTry || 1}.log`.replace(/[^A-Za-z0-9._-]/g, "_") });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    window.__flowkitDownloaded = out.length;   // for the browser test
  };
  await draw();
  const again = debounced(draw, 300);
  return {
    onChange: (c) => { if (run && (String(run.id) === c.payload || c.payload === runId || c.payload === run.flowId)) again(); },
    refresh: draw,
    dispose: () => clearTimeout(logTimer),
  };
}

// A view of many lines that draws only those in sight (and a margin): the element holds a spacer
// as tall as every line and one <pre> of ~100 lines moved to where it is scrolled, so following a
// log of 100,000 lines costs what one of 100 does. Lines do not wrap (each is one line high); the
// view keeps to the bottom while the reader is there, and keeps its place across a page redraw.
function linesView(el) {
  const LH = 18;   // px, app.css's .log-window line height
  let lines = [], render = esc, stick = true, top = 0, frame = 0;
  const spacer = Object.assign(document.createElement("div"), { className: "log-spacer" });
  const win = Object.assign(document.createElement("pre"), { className: "log-window" });
  spacer.append(win);
  el.replaceChildren(spacer);
  const draw = () => {
    frame = 0;
    spacer.style.height = `${Math.max(lines.length, 1) * LH}px`;   // CSSOM, allowed by the CSP
    el.scrollTop = stick ? el.scrollHeight : top;
    const first = Math.max(0, Math.floor(el.scrollTop / LH) - 40);
    const last = Math.min(lines.length, first + Math.ceil((el.clientHeight || 600) / LH) + 80);
    win.style.transform = `translateY(${first * LH}px)`;
    win.innerHTML = lines.slice(first, last).map(render).join("\n");
  };
  const later = () => { if (!frame) frame = requestAnimationFrame(draw); };
  el.addEventListener("scroll", () => {
    if (!el.isConnected) return;
    top = el.scrollTop;
    stick = top + el.clientHeight >= el.scrollHeight - 2 * LH;
    later();
  });
  return { show(ls, r = esc) { lines = ls; render = r; later(); } };
}

function gantt(tasks) {
  const tries = tasks.flatMap((t) => t.tries.map((x) => ({ task: t.taskId, ...x }))).filter((x) => x.queuedAt || x.startedAt);
  if (!tries.length) return '<p class="muted">No try has started yet.</p>';
  if (tries.length > 2000) return `<p class="muted">${tries.length} tries: the timeline is drawn for up to 2,000.</p>`;
  const t0 = Math.min(...tries.map((x) => new Date(x.queuedAt || x.startedAt).getTime()));
  const t1 = Math.max(...tries.map((x) => (x.endedAt ? new Date(x.endedAt) : new Date()).getTime()));
  const span = Math.max(t1 - t0, 1), W = 900, L = 190, RH = 16;
  const x = (iso) => L + ((new Date(iso).getTime() - t0) / span) * (W - L - 10);
  const rows = tries.map((r, i) => {
    const y = 18 + i * RH, q = r.queuedAt || r.startedAt, s = r.startedAt, e = r.endedAt || new Date().toISOString();
    return `<text x="4" y="${y + 11}">${esc((r.task.length > 24 ? r.task.slice(0, 23) + "…" : r.task) + " #" + r.tryNumber)}</text>
      ${s ? `<rect class="wait" x="${x(q)}" y="${y + 2}" width="${Math.max(x(s) - x(q), 1)}" height="${RH - 4}"><title>queued ${esc(fmtDur((new Date(s) - new Date(q)) / 1000))}</title></rect>
      <rect class="s-${esc(r.state)}" x="${x(s)}" y="${y + 2}" width="${Math.max(x(e) - x(s), 2)}" height="${RH - 4}"><title>${esc(r.task)} try ${r.tryNumber}: ${esc(r.state)}, ${esc(fmtDur((new Date(e) - new Date(s)) / 1000))} on ${esc(r.worker || "?")}</title></rect>`
      : `<rect class="wait" x="${x(q)}" y="${y + 2}" width="${Math.max(x(e) - x(q), 1)}" height="${RH - 4}"><title>queued</title></rect>`}`;
  }).join("");
  return `<svg class="dag gantt" width="${W}" height="${24 + tries.length * RH}" role="img" aria-label="timeline of tries">
    <text x="${L}" y="12" class="muted">0 s</text><text x="${W - 60}" y="12">${esc(fmtDur(span / 1000))}</text>${rows}</svg>`;
}

// ---- home ------------------------------------------------------------------------------------
// The data team's landing page: runs by state (24 h, 7 days), flows failing now, the last
// failures with their errors, import errors, health, workers, pools and approvals waiting —
// each linking to its page. One request each, in parallel; a part that fails says so alone.
async function homePage(main) {
  const draw = async () => {
    const get = (p) => api(p, { quiet: true }).catch((e) => ({ __error: e }));
    const [ov, fl, health, sch, wk, pools, appr] = await Promise.all([get("/api/v1/overview"), get("/api/v1/flows"),
      api("/health", { quiet: true }).catch((e) => e.data || { status: "unavailable", checks: {} }), get("/api/v1/schedulers"),
      get("/api/v1/workers"), get("/api/v1/pools"), get("/api/v1/approvals")]);
    if (ov.__error && ov.__error.status === 401) throw ov.__error;
    const unavailable = (x) => x && x.__error ? `<p class="error">${esc(x.__error.message)}</p>` : null;
    const counts = (c) => Object.keys(c || {}).length
      ? Object.entries(c).sort().map(([s, n]) => `<a class="count" href="#/runs?state=${encodeURIComponent(s)}">${sq(s)} <strong>${n}</strong> ${esc(s)}</a>`).join(" ")
      : '<span class="muted">no runs</span>';
    const failing = fl.__error ? [] : fl.flows.filter((f) => f.latestRun && f.latestRun.state === "failed");
    const online = wk.__error ? [] : wk.workers.filter((w) => w.state === "online");
    main.innerHTML = `<h1>Home</h1>
      <div class="cards">
      <section class="card" id="home-runs"><h2>Runs</h2>${unavailable(ov) || `<p>Last 24 h: ${counts(ov.runsLast24h)}</p><p>Last 7 days: ${counts(ov.runsLast7d)}</p>
        <p><a href="#/runs">All runs</a></p>`}</section>
      <section class="card" id="home-failing"><h2>Flows failing now</h2>${unavailable(fl) || (failing.length
        ? `<ul>${failing.map((f) => `<li><a href="#/flows/${encodeURIComponent(f.flowId)}">${esc(f.flowId)}</a> · <a href="#/runs/${encodeURIComponent(f.latestRun.runId)}">failed ${esc(fmtTime(f.latestRun.at))}</a></li>`).join("")}</ul>`
        : '<p class="ok">● no flow\'s last run failed</p>')}</section>
      <section class="card" id="home-approvals"><h2>Approvals waiting</h2>${unavailable(appr) || (appr.approvals.length
        ? `<ul>${appr.approvals.map((a) => `<li><a href="#/runs/${encodeURIComponent(a.runId)}">${esc(a.prompt)}</a> <span class="muted">${esc(a.flowId)} · ${esc(a.taskId)}</span></li>`).join("")}</ul><p><a href="#/approvals">Decide them</a></p>`
        : '<p class="muted">none</p>')}</section>
      <section class="card" id="home-health"><h2>Health</h2>
        <p>${Object.entries(health.checks || {}).map(([k, v]) => `<span class="${v === "ok" ? "ok" : "error"}">● ${esc(k)}</span>`).join(" ") || '<span class="error">● unavailable</span>'}</p>
        ${sch.__error ? "" : `<p>${sch.schedulers.length} scheduler${sch.schedulers.length === 1 ? "" : "s"} · ${sch.leaderHeld ? '<span class="ok">a leader</span>' : '<span class="error">no leader</span>'}</p>`}
        <p>${wk.__error ? "" : `<a href="#/workers">${online.length} worker${online.length === 1 ? "" : "s"} online</a> (${online.reduce((n, w) => n + w.running, 0)} / ${online.reduce((n, w) => n + w.concurrency, 0)} slots busy)`}</p>
        <p><a href="#/health">Health page</a></p></section>
      <section class="card" id="home-pools"><h2>Pools</h2>${unavailable(pools) || (pools.pools.length
        ? `<table><tbody>${pools.pools.map((p) => `<tr><td class="mono">${esc(p.name)}</td><td><progress class="bar" max="${Math.max(p.slots, 1)}" value="${Math.min(p.usedSlots, Math.max(p.slots, 1))}" aria-label="${p.usedSlots} of ${p.slots} slots used"></progress> ${p.usedSlots} / ${p.slots}</td><td>${p.waiting ? `${p.waiting} waiting` : ""}</td></tr>`).join("")}</tbody></table>`
        : '<p class="muted">none</p>')}</section>
      </div>
      <h2>Last failures</h2>${unavailable(ov) || `<table id="home-failures"><thead><tr><th>Run</th><th>Flow</th><th>Kind</th><th>Ended</th><th>Failed task</th><th>Error</th></tr></thead><tbody>
        ${ov.recentFailures.map((r) => `<tr><td><a href="#/runs/${encodeURIComponent(r.runId)}${r.taskId ? "?task=" + encodeURIComponent(r.taskId) : ""}" class="mono">${esc(r.runId)}</a></td>
          <td><a href="#/flows/${encodeURIComponent(r.flowId)}">${esc(r.flowId)}</a></td><td>${esc(r.triggerKind)}</td><td>${esc(fmtTime(r.endedAt))}</td>
          <td class="mono">${esc(r.taskId || "")}</td><td class="error">${esc((r.error || "").slice(0, 300))}</td></tr>`).join("") || '<tr><td colspan="6" class="muted">No failed run.</td></tr>'}</tbody></table>`}
      ${!fl.__error && fl.importErrors && fl.importErrors.length ? `<h2>Import errors</h2><div class="banner" id="home-import-errors"><ul>${fl.importErrors.map((e) => `<li><span class="mono">${esc(e.flowId)}</span>: ${esc(e.message)}</li>`).join("")}</ul></div>` : ""}`;
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const again = debounced(draw, 1000);
  const t = setInterval(draw, 10000);   // workers, pools and health are not change events
  return { onChange: (c) => { if (c.channel === "flowkit_runs") again(); }, refresh: draw, dispose: () => clearInterval(t) };
}

// ---- runs across flows -------------------------------------------------------------------------
// Every run, newest first, filtered by flow, state, kind and logical-date range; keyset paging
// (the API's cursor), so a page costs the same with 1,000,000 runs. The filters live in the URL.
const RUN_KINDS = ["scheduled", "manual", "backfill", "asset", "webhook", "flow"];
const KIND_ICONS = { scheduled: "⏲", manual: "▷", backfill: "⟲", asset: "◆", webhook: "⚡", flow: "↪" };
const kindLabel = (k) => `<span class="kind" title="${esc(k)}">${KIND_ICONS[k] || "•"} ${esc(k)}</span>`;
async function runsPage(main, query) {
  const f = { flow: query.get("flow") || "", state: query.get("state") || "", kind: query.get("kind") || "",
    from: query.get("from") || "", to: query.get("to") || "" };
  const cursors = [];   // the cursors of the pages before this one, for "newer"
  let cursor = null, flows = [];
  const toHash = () => {
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v));
    return `#/runs${q.toString() ? "?" + q : ""}`;
  };
  const draw = async () => {
    if (!flows.length) flows = (await api("/api/v1/flows")).flows.map((x) => x.flowId);
    const q = new URLSearchParams({ limit: "50", taskCounts: "true" });
    if (f.flow) q.set("flow_id", f.flow);
    if (f.state) q.set("state", f.state);
    if (f.kind) q.set("kind", f.kind);
    if (f.from) q.set("since", localToISO(f.from));
    if (f.to) q.set("until", localToISO(f.to));
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/api/v1/runs?${q}`);
    const opt = (v, cur) => `<option value="${esc(v)}" ${v === cur ? "selected" : ""}>${esc(v)}</option>`;
    main.innerHTML = `<h1>Runs</h1>
      <form class="toolbar" id="runfilter">
        <label>Flow <select name="flow"><option value="">all</option>${flows.map((x) => opt(x, f.flow)).join("")}</select></label>
        <label>State <select name="state"><option value="">all</option>${["queued", "running", "success", "failed", "cancelled"].map((x) => opt(x, f.state)).join("")}</select></label>
        <label>Kind <select name="kind"><option value="">all</option>${RUN_KINDS.map((x) => opt(x, f.kind)).join("")}</select></label>
        <label>Logical date (UTC) from <input type="datetime-local" step="1" name="from" value="${esc(f.from)}"></label>
        <label>to <input type="datetime-local" step="1" name="to" value="${esc(f.to)}"></label>
        <button type="submit" class="primary">Filter</button> <a href="#/runs">Clear</a></form>
      <table id="runs"><thead><tr><th>Run</th><th>Flow</th><th>State</th><th>Kind</th><th>Logical date</th><th>Started</th><th>Duration</th><th>Tasks</th></tr></thead><tbody>
      ${page.runs.map((r) => `<tr data-run="${esc(r.runId)}"><td><a class="mono" href="#/runs/${encodeURIComponent(r.runId)}">${esc(r.runId)}</a></td>
        <td><a href="#/flows/${encodeURIComponent(r.flowId)}">${esc(r.flowId)}</a></td><td>${stateLabel(r.state)}</td><td>${kindLabel(r.triggerKind)}</td>
        <td>${esc(fmtTime(r.logicalDate))}</td><td>${esc(fmtTime(r.startedAt))}</td><td>${esc(fmtDur(dur(r.startedAt, r.endedAt)))}</td>
        <td>${Object.entries(r.taskCounts || {}).sort().map(([s, n]) => `<span class="state" title="${esc(s)}">${sq(s)} ${n}</span>`).join(" ")}</td></tr>`).join("")
        || '<tr><td colspan="8" class="muted">No run matches.</td></tr>'}</tbody></table>
      <div class="toolbar">${cursors.length ? '<button type="button" id="newer">← Newer</button>' : ""}${page.nextCursor ? '<button type="button" id="older">Older →</button>' : ""}
        <span class="muted">${page.runs.length} runs on this page</span></div>`;
    $("#runfilter", main).onsubmit = (ev) => {
      ev.preventDefault();
      const d = new FormData(ev.target);
      for (const k of Object.keys(f)) f[k] = String(d.get(k) || "");
      location.hash = toHash();
    };
    if ($("#older", main)) $("#older", main).onclick = () => { cursors.push(cursor); cursor = page.nextCursor; draw(); };
    if ($("#newer", main)) $("#newer", main).onclick = () => { cursor = cursors.pop() || null; draw(); };
    window.__flowkitRendered = performance.now();
  };
  await draw();
  // Live: the first page redraws when runs change; an older page stays as it is.
  const again = debounced(() => { if (!cursor) draw(); }, 1000);
  return { onChange: (c) => { if (c.channel === "flowkit_runs") again(); }, refresh: draw };
}

// ---- approvals (human in the loop) -----------------------------------------------------------
// One approval waiting for a decision: its prompt, its form's fields, a comment, and a button per
// option (the rejecting ones in red). `withRun` adds the flow and run it belongs to (the list).
function approvalHTML(a, withRun) {
  const field = (p) => {
    const id = `af-${esc(a.runId)}-${esc(a.taskId)}-${esc(p.name)}`, v = p.defaultValue;
    const input = p.kind === "bool" ? `<input id="${id}" name="${esc(p.name)}" data-kind="bool" type="checkbox" ${v ? "checked" : ""}>`
      : `<input id="${id}" name="${esc(p.name)}" data-kind="${esc(p.kind)}" value="${esc(v == null ? "" : typeof v === "object" ? JSON.stringify(v) : v)}">`;
    return `<label for="${id}">${esc(p.name)} <span class="muted">(${esc(p.kind)}${v === undefined ? ", required" : ""})</span></label>${input}
      ${p.description ? `<div class="help">${esc(p.description)}</div>` : ""}`;
  };
  return `<div class="banner approval" role="region" aria-label="approval ${esc(a.taskId)}" data-run="${esc(a.runId)}" data-task="${esc(a.taskId)}">
    <b>Waiting for a decision:</b> ${esc(a.prompt)}
    <div class="muted">${withRun ? `<a href="#/flows/${encodeURIComponent(a.flowId)}">${esc(a.flowId)}</a> · run <a href="#/runs/${encodeURIComponent(a.runId)}">${esc(a.runId)}</a> · ` : ""}task
      <span class="mono">${esc(a.taskId)}</span> · asked ${esc(fmtTime(a.requestedAt))}${a.timeoutAt ? ` · without a decision by ${esc(fmtTime(a.timeoutAt))} it ${a.onTimeout === "approve" ? "approves" : a.onTimeout === "fail" ? "fails" : "rejects"}` : ""}</div>
    <form class="params decide" novalidate>${(a.form || []).map(field).join("")}
      <label for="ac-${esc(a.runId)}-${esc(a.taskId)}">Comment</label><input id="ac-${esc(a.runId)}-${esc(a.taskId)}" name="__comment" autocomplete="off">
      <div class="toolbar">${a.options.map((o) => `<button type="button" data-decision="${esc(o)}" class="${a.rejectOptions.includes(o) ? "danger" : "primary"}">${esc(o)}</button>`).join("")}</div>
      <div class="field-error"></div></form></div>`;
}

// Sends the decision of a button's approval; errors (a form value of the wrong type, already
// decided) show under its form.
function wireApprovals(root, done) {
  root.querySelectorAll(".approval").forEach((box) => {
    box.querySelectorAll("button[data-decision]").forEach((b) => (b.onclick = async () => {
      const err = $(".field-error", box), values = {};
      err.textContent = "";
      for (const el of box.querySelectorAll("input[data-kind]")) {
        const k = el.dataset.kind, raw = el.type === "checkbox" ? el.checked : el.value.trim();
        if (raw === "") continue;
        if (k === "int" || k === "number") { if (isNaN(Number(raw))) { err.textContent = `${el.name} must be a number`; return; } values[el.name] = Number(raw); }
        else if (k === "object" || k === "array") { try { values[el.name] = JSON.parse(raw); } catch (_) { err.textContent = `${el.name} is not valid JSON`; return; } }
        else values[el.name] = raw;
      }
      const comment = $('input[name="__comment"]', box).value.trim();
      const body = { decision: b.dataset.decision, values };
      if (comment) body.comment = comment;
      try {
        await api(`/api/v1/runs/${encodeURIComponent(box.dataset.run)}/tasks/${encodeURIComponent(box.dataset.task)}/decision`, { method: "POST", body });
        box.replaceChildren(Object.assign(document.createElement("b"), { textContent: `Decided: ${b.dataset.decision}` }));
        setTimeout(done, 800);
      } catch (e) { err.textContent = e.message; }
    }));
  });
}

async function approvalsPage(main, query) {
  const draw = async () => {
    const all = query.get("state") === "all";
    const { approvals } = await api(`/api/v1/approvals?state=${all ? "all" : "waiting"}`);
    main.innerHTML = `<h1>Approvals</h1>
      <div class="toolbar"><a href="#/approvals${all ? "" : "?state=all"}">${all ? "Only those waiting" : "Show decided ones too"}</a></div>
      ${all ? `<table id="approvals"><thead><tr><th>Flow</th><th>Run</th><th>Task</th><th>Prompt</th><th>State</th><th>Decision</th><th>Asked</th></tr></thead><tbody>
        ${approvals.map((a) => `<tr><td>${esc(a.flowId)}</td><td><a href="#/runs/${encodeURIComponent(a.runId)}">${esc(a.runId)}</a></td><td class="mono">${esc(a.taskId)}</td>
          <td>${esc(a.prompt)}</td><td>${esc(a.state)}</td><td>${a.decision ? `${esc(a.decision)} <span class="muted">by ${esc(a.decidedBy || "?")}</span>${a.comment ? `: ${esc(a.comment)}` : ""}` : ""}</td>
          <td>${esc(fmtTime(a.requestedAt))}</td></tr>`).join("") || '<tr><td colspan="7" class="muted">No approval yet.</td></tr>'}</tbody></table>`
        : `<div id="approvals">${approvals.map((a) => approvalHTML(a, true)).join("") || '<p class="muted">No approval is waiting for a decision.</p>'}</div>`}`;
    wireApprovals(main, draw);
    window.__flowkitRendered = performance.now();
  };
  await draw();
  // A new approval starts with a task's change: redraw then, unless someone is typing in a form.
  const again = debounced(() => { if (!main.contains(document.activeElement) || document.activeElement === document.body) draw(); }, 500);
  return { onChange: (c) => { if (c.channel === "flowkit_changes" || c.channel === "flowkit_runs") again(); }, refresh: draw };
}

// ---- backfills ----------------------------------------------------------------------------
const BF_ACTIONS = { create: "create a run", rerun: "re-run", skip: "skip" };
// A <input type="datetime-local"> value, read in UTC (the zone every time here is shown in), as an ISO instant.
const localToISO = (v) => (v ? new Date(v + "Z").toISOString() : "");
function tickRows(ticks, limit) {
  const shown = ticks.slice(0, limit);
  return shown.map((t) => `<tr><td>${esc(fmtTime(t.logicalDate))}</td><td><span class="chip bf-${esc(t.action)}">${esc(BF_ACTIONS[t.action] || t.action)}</span>${!t.done && t.action !== "skip" ? ' <span class="muted">pending</span>' : ""}</td>
    <td>${t.runId ? `<a href="#/runs/${encodeURIComponent(t.runId)}" class="mono">${esc(t.runId)}</a>` : ""}</td><td>${t.runState ? stateLabel(t.runState) : ""}</td><td>${esc(t.reason || "")}</td></tr>`).join("")
    + (ticks.length > limit ? `<tr><td colspan="5" class="muted">… and ${ticks.length - limit} more ticks</td></tr>` : "");
}
const tickTable = (ticks, limit = 500) => `<table class="ticks"><thead><tr><th>Logical date</th><th>Action</th><th>Run</th><th>Run state</th><th>Why</th></tr></thead>
  <tbody>${tickRows(ticks, limit) || '<tr><td colspan="5" class="muted">No cron tick falls in the range.</td></tr>'}</tbody></table>`;

// Backfill dialog: the range, reprocess, at most how many runs at once, the order; "Preview" asks
// the API for a dry run (each tick's action, and how many existing runs each reprocess choice
// re-runs) before "Create" makes it.
async function backfillDialog(flowId, flow) {
  const d = $("#dialog");
  d.innerHTML = `<form class="params" id="bf" novalidate><h2>Backfill ${esc(flowId)}</h2>
    <p class="muted">A run for every tick of <span class="mono">${esc(flow.schedule)}</span> (${esc(flow.timezone)}) in the range; times below are in your browser's zone.</p>
    <label for="bf-from">From (first tick, inclusive, UTC)</label><input id="bf-from" type="datetime-local" step="1" required>
    <label for="bf-to">To (last tick, inclusive, UTC)</label><input id="bf-to" type="datetime-local" step="1" required>
    <label for="bf-reprocess">Ticks that already have a run</label>
    <select id="bf-reprocess"><option value="none">none: skip them</option><option value="failed">failed: re-run the failed ones</option><option value="all">all: re-run failed and successful ones</option></select>
    <label for="bf-max">At most this many runs at once</label><input id="bf-max" type="number" min="1" value="10" inputmode="numeric">
    <label for="bf-order">Order</label><select id="bf-order"><option value="oldest">oldest first</option><option value="newest">newest first</option></select>
    <div class="field-error" id="bf-err"></div>
    <div id="bf-plan"></div>
    <div class="toolbar"><button type="button" id="bf-preview">Preview</button><button class="primary" type="submit" id="bf-create">Create backfill</button>
      <button type="button" id="bf-cancel">Cancel</button></div></form>`;
  d.showModal();
  $("#bf-cancel").onclick = () => d.close();
  const body = (dryRun) => ({ flowId, from: localToISO($("#bf-from").value), to: localToISO($("#bf-to").value), reprocess: $("#bf-reprocess").value,
    maxActiveRuns: parseInt($("#bf-max").value, 10), newestFirst: $("#bf-order").value === "newest", dryRun });
  const check = () => {
    const b = body(false);
    if (!b.from || !b.to) return "choose the first and the last tick";
    if (!(b.maxActiveRuns >= 1)) return "at most how many runs at once: a whole number of at least 1";
    return null;
  };
  $("#bf-preview").onclick = async () => {
    $("#bf-err").textContent = "";
    const bad = check(); if (bad) { $("#bf-err").textContent = bad; return; }
    try {
      const plan = await api("/api/v1/backfills", { method: "POST", body: body(true) });
      const rc = plan.reprocessCounts || {};
      for (const o of $("#bf-reprocess").options) o.textContent = `${o.value}: ${{ none: "skip them", failed: "re-run the failed ones", all: "re-run failed and successful ones" }[o.value]} (re-runs ${rc[o.value] ?? 0})`;
      $("#bf-plan").innerHTML = `<p id="bf-summary"><strong>${plan.counts.create}</strong> runs to create, <strong>${plan.counts.rerun}</strong> to re-run, <strong>${plan.counts.skip}</strong> ticks skipped</p>
        <div class="plan-wrap">${tickTable(plan.ticks, 200)}</div>`;
    } catch (e) { $("#bf-err").textContent = e.message; }
  };
  $("#bf").onsubmit = async (ev) => {
    ev.preventDefault();
    $("#bf-err").textContent = "";
    const bad = check(); if (bad) { $("#bf-err").textContent = bad; return; }
    try {
      const made = await api("/api/v1/backfills", { method: "POST", body: body(false) });
      d.close();
      location.hash = `#/backfills/${made.backfill.id}`;
    } catch (e) { $("#bf-err").textContent = e.message; }
  };
}

function bfProgress(b) {
  const total = b.counts.create + b.counts.rerun + b.counts.skip;
  const pct = total ? Math.round((100 * b.ticksDone) / total) : 100;
  // A <progress> element: an inline width would need a style attribute, which the CSP refuses.
  return `<progress class="bar" max="100" value="${pct}" aria-label="${pct}% of the ticks done"></progress> ${b.ticksDone}/${total} ticks`;
}
const bfRuns = (b) => Object.entries(b.runs || {}).sort().map(([s, n]) => `<span class="state">${sq(s)} ${n} ${esc(s)}</span>`).join(" ") || '<span class="muted">none yet</span>';

async function backfillsPage(main, query) {
  const draw = async () => {
    const state = query.get("state") || "";
    const { backfills } = await api(`/api/v1/backfills?limit=200${state ? "&state=" + encodeURIComponent(state) : ""}`);
    main.innerHTML = `<h1>Backfills</h1>
      <div class="toolbar"><label>State <select id="bfstate"><option value="">all</option>${["running", "paused", "completed", "cancelled"].map((s) => `<option ${s === state ? "selected" : ""}>${s}</option>`).join("")}</select></label>
        <span class="muted">Create one from a scheduled flow's page (Backfill…) or with <span class="mono">flowctl backfill FLOW --from … --to …</span>.</span></div>
      <table id="backfills"><thead><tr><th>Backfill</th><th>Flow</th><th>State</th><th>Range</th><th>Reprocess</th><th>Progress</th><th>Runs</th><th>Created</th></tr></thead><tbody>
      ${backfills.map((b) => `<tr><td><a href="#/backfills/${b.id}">#${b.id}</a></td><td><a href="#/flows/${encodeURIComponent(b.flowId)}">${esc(b.flowId)}</a></td>
        <td><span class="chip bfs-${esc(b.state)}">${esc(b.state)}</span></td><td>${esc(fmtTime(b.from))} → ${esc(fmtTime(b.to))}</td><td>${esc(b.reprocess)}</td>
        <td>${bfProgress(b)}</td><td>${bfRuns(b)}</td><td>${esc(fmtTime(b.createdAt))}${b.createdBy ? ` <span class="muted">by ${esc(b.createdBy)}</span>` : ""}</td></tr>`).join("")
        || '<tr><td colspan="8" class="muted">No backfill yet.</td></tr>'}</tbody></table>`;
    $("#bfstate", main).onchange = (e) => { location.hash = `#/backfills${e.target.value ? "?state=" + e.target.value : ""}`; };
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const t = setInterval(draw, 3000);
  return { refresh: draw, dispose: () => clearInterval(t) };
}

async function backfillPage(main, id) {
  const draw = async () => {
    const { backfill: b, ticks } = await api(`/api/v1/backfills/${encodeURIComponent(id)}`);
    const live = b.state === "running" || b.state === "paused";
    main.innerHTML = `<h1>Backfill #${b.id} of <a href="#/flows/${encodeURIComponent(b.flowId)}">${esc(b.flowId)}</a> <span class="chip bfs-${esc(b.state)}" id="bf-state">${esc(b.state)}</span></h1>
      <p class="muted">${esc(fmtTime(b.from))} → ${esc(fmtTime(b.to))} · reprocess <strong>${esc(b.reprocess)}</strong> · at most ${b.maxActiveRuns} runs at once ·
        ${b.newestFirst ? "newest" : "oldest"} first · created ${esc(fmtTime(b.createdAt))}${b.createdBy ? ` by ${esc(b.createdBy)}` : ""}${b.completedAt ? ` · ended ${esc(fmtTime(b.completedAt))}` : ""}</p>
      <div class="toolbar">${b.state === "running" ? '<button type="button" id="bf-pause">Pause</button>' : ""}${b.state === "paused" ? '<button type="button" id="bf-resume" class="primary">Resume</button>' : ""}
        ${live ? '<button type="button" id="bf-cancelb" class="danger">Cancel backfill</button>' : ""}</div>
      <table class="needs"><tbody><tr><th>Progress</th><td id="bf-progress">${bfProgress(b)}</td></tr>
        <tr><th>Plan</th><td>${b.counts.create} to create, ${b.counts.rerun} to re-run, ${b.counts.skip} skipped</td></tr>
        <tr><th>Runs</th><td id="bf-runs">${bfRuns(b)}</td></tr></tbody></table>
      <h2>Ticks</h2>${tickTable(ticks)}`;
    const act = (sel, action, ask) => {
      const el = $(sel, main);
      if (el) el.onclick = async () => {
        if (ask && !confirm(ask)) return;
        try { await api(`/api/v1/backfills/${b.id}/${action}`, { method: "POST" }); } catch (e) { alert(e.message); }
        draw();
      };
    };
    act("#bf-pause", "pause"); act("#bf-resume", "resume");
    act("#bf-cancelb", "cancel", `Cancel backfill #${b.id}? Its queued runs are cancelled; running ones finish.`);
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const again = debounced(draw, 500);
  const t = setInterval(draw, 3000);
  return { onChange: (c) => { if (c.channel === "flowkit_runs") again(); }, refresh: draw, dispose: () => clearInterval(t) };
}

// ---- pools, assets, notifications, audit: what the CLI already shows --------------------------
// Pools: usage, and (admin) slots edited in place.
async function poolsPage(main) {
  const draw = async () => {
    const { pools } = await api("/api/v1/pools");
    main.innerHTML = `<h1>Pools</h1><p class="muted">Named slots that limit how many tasks run at once across flows. Editing slots needs an admin token; waiting tasks start at once if a pool grows.</p>
      <table id="pools"><thead><tr><th>Pool</th><th>Usage</th><th>Waiting</th><th>Slots</th><th>Description</th></tr></thead><tbody>
      ${pools.map((p) => `<tr data-pool="${esc(p.name)}"><td class="mono">${esc(p.name)}</td>
        <td><progress class="bar" max="${Math.max(p.slots, 1)}" value="${Math.min(p.usedSlots, Math.max(p.slots, 1))}" aria-label="${p.usedSlots} of ${p.slots} slots used"></progress> ${p.usedSlots} / ${p.slots}</td>
        <td>${p.waiting}</td><td><form class="slots"><input name="slots" type="number" min="0" value="${p.slots}" aria-label="slots of ${esc(p.name)}" inputmode="numeric">
        <button type="submit">Save</button></form><div class="field-error"></div></td><td>${esc(p.description)}</td></tr>`).join("") || '<tr><td colspan="5" class="muted">No pool.</td></tr>'}
      </tbody></table>`;
    main.querySelectorAll("tr[data-pool]").forEach((tr) => {
      $("form.slots", tr).onsubmit = async (ev) => {
        ev.preventDefault();
        const n = Number(ev.target.slots.value);
        if (!Number.isInteger(n) || n < 0) { $(".field-error", tr).textContent = "slots must be a whole number of at least 0"; return; }
        try { await api(`/api/v1/pools/${encodeURIComponent(tr.dataset.pool)}`, { method: "PUT", body: { slots: n } }); draw(); }
        catch (e) { $(".field-error", tr).textContent = e.message; }
      };
    });
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const t = setInterval(draw, 5000);
  return { refresh: draw, dispose: () => clearInterval(t) };
}

// Assets: each with its events and the flows they start; one asset's events when chosen.
// An asset's lineage as a graph: the tasks that name it as an outlet (and outside sources of its
// events) on the left, the asset, and the flows scheduled on it on the right; each links to its flow.
function assetGraph(a) {
  const left = [...a.producerTasks.map((t) => ({ id: t, upstream: [], flow: t.split(".")[0] })),
    ...a.sources.map((x) => ({ id: `outside (${x})`, upstream: [] }))];
  const nodes = [...left, { id: a.uri, upstream: left.map((n) => n.id) },
    ...a.consumers.filter((c) => !left.some((n) => n.id === c)).map((c) => ({ id: c, upstream: [a.uri], flow: c }))];
  const flowOf = new Map(nodes.filter((n) => n.flow).map((n) => [n.id, n.flow]));
  const states = Object.fromEntries(nodes.map((n) => [n.id, n.id === a.uri ? (a.events ? "success" : "queued") : "pending"]));
  return dagSVG(nodes, states, (id) => flowOf.has(id) ? `#/flows/${encodeURIComponent(flowOf.get(id))}` : `#/assets?uri=${encodeURIComponent(a.uri)}`, true)
    .replace('aria-label="task graph"', `aria-label="lineage of ${esc(a.uri)}"`);
}

async function assetsPage(main, query) {
  const uri = query.get("uri");
  const draw = async () => {
    const [{ assets }, events] = await Promise.all([api("/api/v1/assets"),
      uri ? api(`/api/v1/assets/events?uri=${encodeURIComponent(uri)}&limit=100`) : Promise.resolve(null)]);
    const flowLinks = (ids) => ids.map((c) => `<a href="#/flows/${encodeURIComponent(c.split(".")[0])}">${esc(c)}</a>`).join(", ");
    const chosen = uri && assets.find((a) => a.uri === uri);
    main.innerHTML = `<h1>Assets</h1>
      <table id="assets"><thead><tr><th>Asset</th><th>Events</th><th>Last event</th><th>Updated by</th><th>Starts (consumers)</th></tr></thead><tbody>
      ${assets.map((a) => `<tr><td><a class="mono" href="#/assets?uri=${encodeURIComponent(a.uri)}">${esc(a.uri)}</a></td><td>${a.events}</td><td>${esc(fmtTime(a.lastEventAt))}</td>
        <td>${[flowLinks(a.producerTasks || []), ...(a.sources || []).map((x) => `<span class="muted">outside (${esc(x)})</span>`)].filter(Boolean).join(", ") || '<span class="muted">none declared</span>'}</td>
        <td>${flowLinks(a.consumers || []) || '<span class="muted">none</span>'}</td></tr>`).join("")
        || '<tr><td colspan="5" class="muted">No asset has had an event yet.</td></tr>'}</tbody></table>
      ${chosen ? `<h2>What updates <span class="mono">${esc(uri)}</span> and what it starts</h2><div id="asset-graph">${assetGraph(chosen)}</div>` : ""}
      ${events ? `<h2>Events of <span class="mono">${esc(uri)}</span></h2><table id="asset-events"><thead><tr><th>At</th><th>Source</th><th>Run</th><th>Extra</th></tr></thead><tbody>
        ${events.events.map((e) => `<tr><td>${esc(fmtTime(e.at))}</td><td>${esc(e.source)}</td><td>${e.runId ? `<a class="mono" href="#/runs/${encodeURIComponent(e.runId)}">${esc(e.runId)}</a>${e.taskId ? ` · ${esc(e.taskId)}` : ""}` : ""}</td>
          <td><span class="mono">${esc(JSON.stringify(e.extra))}</span></td></tr>`).join("") || '<tr><td colspan="4" class="muted">No event.</td></tr>'}</tbody></table>` : ""}`;
    window.__flowkitRendered = performance.now();
  };
  await draw();
  return { onChange: (c) => { if (c.channel === "flowkit_runs") draw(); }, refresh: draw };
}

// Notifications: the outbox, each with its attempts and outcome.
async function notificationsPage(main, query) {
  const status = query.get("status") || "";
  const draw = async () => {
    const { notifications } = await api(`/api/v1/notifications?limit=200${status ? "&status=" + encodeURIComponent(status) : ""}`);
    main.innerHTML = `<h1>Notifications</h1>
      <div class="toolbar"><label>Status <select id="nstatus">${["", "pending", "delivered", "failed"].map((v) => `<option value="${v}" ${v === status ? "selected" : ""}>${v || "all"}</option>`).join("")}</select></label></div>
      <table id="notifications"><thead><tr><th>Event</th><th>Notifier</th><th>Run</th><th>Status</th><th>Attempts</th><th>Last error</th><th>Created</th><th>Delivered</th></tr></thead><tbody>
      ${notifications.map((n) => `<tr><td>${esc(n.event)}</td><td class="mono">${esc(n.notifier)}</td>
        <td>${n.runId ? `<a class="mono" href="#/runs/${encodeURIComponent(n.runId)}">${esc(n.runId)}</a>` : ""}${n.taskId ? ` · ${esc(n.taskId)}` : ""}</td>
        <td class="${n.status === "failed" ? "error" : n.status === "delivered" ? "ok" : ""}">${esc(n.status)}</td><td>${n.attempts}</td>
        <td class="error">${esc(n.lastError || "")}</td><td>${esc(fmtTime(n.createdAt))}</td><td>${esc(fmtTime(n.deliveredAt))}</td></tr>`).join("")
        || '<tr><td colspan="8" class="muted">No notification.</td></tr>'}</tbody></table>`;
    $("#nstatus", main).onchange = (e) => { location.hash = `#/notifications${e.target.value ? "?status=" + e.target.value : ""}`; };
    window.__flowkitRendered = performance.now();
  };
  await draw();
  const t = setInterval(draw, 5000);
  return { refresh: draw, dispose: () => clearInterval(t) };
}

// The audit log (admin): who changed what, filtered by actor and action, newest first, paged.
async function auditPage(main, query) {
  const actor = query.get("actor") || "", action = query.get("action") || "";
  const pages = [];
  let before = null;
  const draw = async () => {
    const q = new URLSearchParams({ limit: "100" });
    if (actor) q.set("actor", actor);
    if (action) q.set("action", action);
    if (before) q.set("before", before);
    const { entries } = await api(`/api/v1/audit?${q}`);
    main.innerHTML = `<h1>Audit log</h1>
      <form class="toolbar" id="auditf"><label>Actor <input name="actor" value="${esc(actor)}" placeholder="token:alice"></label>
        <label>Action <input name="action" value="${esc(action)}" placeholder="trigger, decide, backfill…"></label>
        <button type="submit" class="primary">Filter</button> <a href="#/audit">Clear</a></form>
      <table id="audit"><thead><tr><th>At</th><th>Actor</th><th>Action</th><th>Target</th><th>Detail</th></tr></thead><tbody>
      ${entries.map((e) => `<tr><td>${esc(fmtTime(e.at))}</td><td class="mono">${esc(e.actor)}</td><td>${esc(e.action)}</td><td class="mono">${esc(e.target)}</td>
        <td><span class="mono">${esc(JSON.stringify(e.detail))}</span></td></tr>`).join("") || '<tr><td colspan="5" class="muted">No entry.</td></tr>'}</tbody></table>
      <div class="toolbar">${pages.length ? '<button type="button" id="anewer">← Newer</button>' : ""}${entries.length === 100 ? '<button type="button" id="aolder">Older →</button>' : ""}</div>`;
    $("#auditf", main).onsubmit = (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const k of ["actor", "action"]) { const v = ev.target[k].value.trim(); if (v) p.set(k, v); }
      location.hash = `#/audit${p.toString() ? "?" + p : ""}`;
    };
    if ($("#aolder", main)) $("#aolder", main).onclick = () => { pages.push(before); before = entries[entries.length - 1].id; draw(); };
    if ($("#anewer", main)) $("#anewer", main).onclick = () => { before = pages.pop() || null; draw(); };
    window.__flowkitRendered = performance.now();
  };
  await draw();
  return { refresh: draw };
}

async function workersPage(main) {
  const draw = async () => {
    const { workers } = await api("/api/v1/workers");
    main.innerHTML = `<h1>Workers</h1><table><thead><tr><th>Worker</th><th>State</th><th>Host</th><th>Queues</th><th>Slots used</th><th>Last heartbeat</th><th>Version</th><th>Flows</th></tr></thead><tbody>
      ${workers.map((w) => `<tr><td class="mono">${esc(w.name)}</td><td>${w.state === "online" ? '<span class="ok">● online</span>' : `<span class="error">● ${esc(w.state)}</span>`}</td>
        <td>${esc(w.host)}${w.pid ? ` <span class="muted">pid ${w.pid}</span>` : ""}</td><td>${w.queues.map((q) => `<span class="chip">${esc(q)}</span>`).join("")}</td>
        <td>${w.running} / ${w.concurrency}</td><td>${esc(fmtDur(w.heartbeatAgeSeconds))} ago</td><td class="mono">${esc(w.version || "")}</td>
        <td>${w.flows ? `<details><summary>${w.flows.length}</summary>${w.flows.map((f) => `<div class="mono">${esc(f.flowId)} ${f.version ? "v" + f.version : "unregistered"}</div>`).join("")}</details>` : '<span class="muted">?</span>'}</td></tr>`).join("") || '<tr><td colspan="8" class="muted">No worker has reported yet.</td></tr>'}
      </tbody></table>`;
  };
  await draw();
  const t = setInterval(draw, 5000);   // heartbeats are not change events: a worker list refreshes every 5 s
  return { refresh: draw, dispose: () => clearInterval(t) };
}

// Connections and variables: a table, a form that sets one (admin token), a delete button per
// row. A connection's secret is never shown: the API returns its URL with the password masked.
async function storePage(main, kind) {
  const conn = kind === "connections";
  const path = `/api/v1/${kind}`;
  const draw = async () => {
    const data = await api(path);
    const rows = data[kind];
    main.innerHTML = `<h1>${conn ? "Connections" : "Variables"}</h1>
      <p class="muted">${conn ? "Stored encrypted; a task that declares one (<span class=\"mono\">connections: [\"name\"]</span>, or the connection of a SQL, S3 or sensor task) gets it in its message. A worker's own <span class=\"mono\">FLOWKIT_CONN_&lt;NAME&gt;</span> wins."
        : "Stored encrypted; a task that declares one (<span class=\"mono\">variables: [\"name\"]</span>) reads it with <span class=\"mono\">ctx.variable</span>. Values of keys that look secret are shown masked unless you are signed in as admin."}</p>
      <table><thead><tr>${conn ? "<th>Connection</th><th>Type</th><th>URL (secret masked)</th>" : "<th>Variable</th><th>Value</th>"}<th>Description</th><th>Updated</th><th></th></tr></thead><tbody>
      ${rows.map((r) => `<tr><td class="mono">${esc(conn ? r.name : r.key)}</td>${conn ? `<td>${esc(r.type)}</td><td class="mono">${esc(r.uri)}</td>` : `<td class="mono">${esc(r.value)}</td>`}
        <td>${esc(r.description)}</td><td>${esc(fmtTime(r.updatedAt))}${r.updatedBy ? ` <span class="muted">by ${esc(r.updatedBy)}</span>` : ""}</td>
        <td><button type="button" data-del="${esc(conn ? r.name : r.key)}">Delete</button></td></tr>`).join("") || `<tr><td colspan="6" class="muted">None yet.</td></tr>`}
      </tbody></table>
      <h2>Set ${conn ? "a connection" : "a variable"}</h2>
      <form id="setform" class="params" novalidate>
        <label for="s-name">${conn ? "Name" : "Key"}</label><input id="s-name" name="name" autocomplete="off">
        <label for="s-value">${conn ? "URL" : "Value"}</label>${conn ? '<input id="s-value" name="value" type="password" autocomplete="off" placeholder="postgresql://user:password@host:5432/db">' : '<textarea id="s-value" name="value" rows="2" class="mono"></textarea>'}
        <label for="s-desc">Description</label><input id="s-desc" name="description">
        <div class="field-error" id="s-err"></div>
        <div class="toolbar"><button class="primary" type="submit">Save</button></div>
      </form>`;
    main.querySelectorAll("button[data-del]").forEach((b) => (b.onclick = async () => {
      if (!confirm(`Delete ${conn ? "connection" : "variable"} ${b.dataset.del}?`)) return;
      try { await api(`${path}/${encodeURIComponent(b.dataset.del)}`, { method: "DELETE" }); } catch (e) { alert(e.message); }
      draw();
    }));
    $("#setform", main).onsubmit = async (ev) => {
      ev.preventDefault();
      const name = $("#s-name", main).value.trim(), value = $("#s-value", main).value, description = $("#s-desc", main).value;
      const body = conn ? { uri: value } : { value };
      if (description) body.description = description;
      try { await api(`${path}/${encodeURIComponent(name)}`, { method: "PUT", body }); draw(); }
      catch (e) { $("#s-err", main).textContent = e.message; }
    };
  };
  await draw();
  return { refresh: draw };
}

// The flow as declared: schedule, params and every task with its options, what it needs from
// the store, and where the code declares it (File.swift:line).
function definitionHTML(flow, open) {
  const d = flow.definition;
  if (!d) return "";
  const src = flow.source || {}, at = (src.tasks || {});
  const needs = (t) => {
    const c = new Set(t.connections || []);
    if (t.sql && t.sql.connection) c.add(t.sql.connection);
    if (t.s3 && t.s3.connection) c.add(t.s3.connection);
    return [...c].sort();
  };
  const opts = (t) => [t.retry && t.retry.retries ? `${t.retry.retries} retr${t.retry.retries === 1 ? "y" : "ies"}${t.retry.delaySeconds ? ` ${fmtDur(t.retry.delaySeconds)} apart` : ""}` : "",
    t.timeoutSeconds ? `timeout ${fmtDur(t.timeoutSeconds)}` : "", t.queue && t.queue !== "default" ? `queue ${t.queue}` : "",
    t.pool ? `pool ${t.pool}${t.poolSlots > 1 ? ` ×${t.poolSlots}` : ""}` : "", t.triggerRule && t.triggerRule !== "all_success" ? t.triggerRule : "",
    t.priority ? `priority ${t.priority}` : "", t.sensor ? `pokes every ${fmtDur(t.sensor.pokeIntervalSeconds)} for ${fmtDur(t.sensor.timeoutSeconds)}` : "",
    t.mapOver ? "mapped" : "", (t.outlets || []).length ? `updates ${t.outlets.join(", ")}` : ""].filter(Boolean).map(esc).join(" · ");
  return `<details id="definition"${open ? " open" : ""}><summary><h2>Definition</h2></summary>
    <p>Declared at <span class="mono">${esc(src.flow || "?")}</span> · owner ${esc(d.owner)} · ${d.schedule ? `schedule <span class="mono">${esc(flow.schedule || "")}</span> (${esc(flow.timezone)})` : "no schedule"}
      · max ${d.maxActiveRuns} active run${d.maxActiveRuns === 1 ? "" : "s"}${d.catchup ? " · catchup" : ""}${d.runTimeoutSeconds ? ` · run timeout ${esc(fmtDur(d.runTimeoutSeconds))}` : ""}</p>
    ${(d.params || []).length ? `<h3>Params</h3><table><thead><tr><th>Param</th><th>Kind</th><th>Default</th><th>Description</th></tr></thead><tbody>${d.params.map((p) =>
      `<tr><td class="mono">${esc(p.name)}</td><td>${esc(p.kind)}</td><td class="mono">${p.defaultValue === undefined ? "—" : esc(JSON.stringify(p.defaultValue))}</td><td>${esc(p.description)}</td></tr>`).join("")}</tbody></table>` : ""}
    <h3>Tasks</h3><table class="definition"><thead><tr><th>Task</th><th>Kind</th><th>After</th><th>Options</th><th>Connections</th><th>Variables</th><th>Declared at</th></tr></thead><tbody>
    ${d.tasks.map((t) => `<tr><td class="mono">${esc(t.id)}${t.description ? `<div class="muted">${esc(t.description)}</div>` : ""}</td><td>${esc(t.kind)}</td>
      <td class="mono">${esc((t.upstream || []).join(", ") || "—")}</td><td>${opts(t) || '<span class="muted">defaults</span>'}</td>
      <td class="mono">${esc(needs(t).join(", ") || "—")}</td><td class="mono">${esc((t.variables || []).join(", ") || "—")}</td>
      <td class="mono">${esc(at[t.id] || "?")}</td></tr>`).join("")}</tbody></table></details>`;
}

// What a flow's tasks need from the store, and whether it is set.
function needsHTML(needs) {
  if (!needs) return "";
  const list = (kind, items) => items.length ? `<tr><th>${kind}</th><td>${items.map((i) =>
    `<span class="chip ${i.set ? "ok" : "error"}" title="used by ${esc(i.tasks.join(", "))}">${esc(i.name)} ${i.set ? "✓ set" : "✗ not set"}</span>`).join(" ")}</td></tr>` : "";
  return `<h2>Needs</h2><table class="needs"><tbody>${list(`<a href="#/connections">connections</a>`, needs.connections)}${list(`<a href="#/variables">variables</a>`, needs.variables)}</tbody></table>
    <p class="muted">"not set" means the store lacks it; a worker may still have its own FLOWKIT_CONN_&lt;NAME&gt; or FLOWKIT_VAR_&lt;NAME&gt;.</p>`;
}

async function healthPage(main) {
  const draw = async () => {
    let h, sch = null;
    try { h = await api("/api/v1/health", { quiet: true }); } catch (e) { h = e.data || { status: "unavailable", checks: {} }; }
    try { sch = await api("/api/v1/schedulers", { quiet: true }); } catch (_) { }
    if (sch) { h.schedulers = sch.schedulers; h.leaderHeld = sch.leaderHeld; }
    main.innerHTML = `<h1>Health</h1><p>${h.status === "ok" ? '<span class="ok">● all good</span>' : '<span class="error">● unavailable</span>'}</p>
      <table><tbody>${Object.entries(h.checks || {}).map(([k, v]) => `<tr><th>${esc(k)}</th><td class="${v === "ok" ? "ok" : "error"}">${esc(v)}</td></tr>`).join("")}</tbody></table>
      ${h.queues ? `<h2>Queues</h2><table><thead><tr><th>Queue</th><th>Waiting messages</th></tr></thead><tbody>${Object.entries(h.queues).map(([q, n]) => `<tr><td>${esc(q)}</td><td>${n}</td></tr>`).join("")}</tbody></table>` : ""}
      ${h.schedulers ? `<h2>Schedulers</h2><table><thead><tr><th>Scheduler</th><th>Host</th><th>Last heartbeat</th></tr></thead><tbody>${h.schedulers.map((s) =>
        `<tr><td class="mono">${esc(s.name)}</td><td>${esc(s.host)}</td><td>${esc(fmtDur(s.heartbeatAgeSeconds))} ago</td></tr>`).join("")}</tbody></table>
        <p>${h.leaderHeld ? '<span class="ok">● a scheduler holds the leader lock</span>' : '<span class="error">● no scheduler holds the leader lock: maintenance (reaper, notifications) is not running</span>'}</p>` : '<p class="muted">Sign in to see the schedulers.</p>'}`;
  };
  await draw();
  const t = setInterval(draw, 5000);
  return { refresh: draw, dispose: () => clearInterval(t) };
}

// Each route draws into a view of its own. A page still loading when the user moves on (its
// fetch answers after the next page is drawn) then draws into a view no longer shown, and is
// disposed as soon as it returns, instead of overwriting the page the user went to.
let routeSeq = 0;
async function route() {
  if (page && page.dispose) page.dispose();
  page = null;
  changedWhileLoading = false;
  const seq = ++routeSeq;
  const main = document.createElement("div");
  main.innerHTML = '<p class="muted">Loading…</p>';
  $("#main").replaceChildren(main);
  const [path, qs] = (location.hash.slice(1) || "/").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === (parts[0] || "home")));
  try {
    let p = null;
    if (!parts.length) p = await homePage(main);
    else if (parts[0] === "flows" && parts.length === 1) p = await flowsPage(main);
    else if (parts[0] === "runs" && parts.length === 1) p = await runsPage(main, query);
    else if (parts[0] === "flows") p = await flowPage(main, parts[1]);
    else if (parts[0] === "runs") p = await runPage(main, parts[1], query);
    else if (parts[0] === "workers") p = await workersPage(main);
    else if (parts[0] === "approvals") p = await approvalsPage(main, query);
    else if (parts[0] === "pools") p = await poolsPage(main);
    else if (parts[0] === "assets") p = await assetsPage(main, query);
    else if (parts[0] === "notifications") p = await notificationsPage(main, query);
    else if (parts[0] === "audit") p = await auditPage(main, query);
    else if (parts[0] === "backfills" && parts.length === 1) p = await backfillsPage(main, query);
    else if (parts[0] === "backfills") p = await backfillPage(main, parts[1]);
    else if (parts[0] === "health") p = await healthPage(main);
    else if (parts[0] === "connections" || parts[0] === "variables") p = await storePage(main, parts[0]);
    else main.innerHTML = `<h1>Not found</h1><p><a href="#/">Flows</a></p>`;
    if (seq !== routeSeq) { if (p && p.dispose) p.dispose(); return; }
    page = p;
    if (changedWhileLoading && p && p.refresh) { changedWhileLoading = false; p.refresh(); }
    document.title = `FlowKit — ${parts.join(" / ") || "home"}`;
  } catch (e) {
    main.innerHTML = `<h1>${e.status === 401 ? "Sign in to see this" : "Something went wrong"}</h1><p class="error">${esc(e.message)}</p>`;
  }
}

window.addEventListener("hashchange", route);
// Leaving the page closes its stream: a page kept in the back/forward cache would otherwise hold
// one of the browser's six connections to this host for as long as the stream lasts.
window.addEventListener("pagehide", () => { if (liveAbort) { liveAbort.abort(); liveAbort = null; } });
window.addEventListener("pageshow", (e) => { if (e.persisted) { startLive(); route(); } });
window.addEventListener("DOMContentLoaded", () => { updateSignin(); route(); startLive(); });
