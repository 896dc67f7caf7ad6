// The gateway console's only script: the overview's live chart, the event page's and the dead
// letters page's replay buttons, and the plugins page's reload button. State-changing calls POST
// JSON to the API with the session's CSRF token; nothing here reads or stores a secret.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : null;
  const $ = (sel) => document.querySelector(sel);
  const $$ = (sel) => Array.from(document.querySelectorAll(sel));

  async function post(url, body) {
    const headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin" });
    let data = {};
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    return { ok: res.ok, status: res.status, data };
  }

  function say(text, ok) {
    const el = $("#result");
    if (!el) return;
    el.textContent = text;
    el.className = "result " + (ok ? "ok" : "bad");
  }

  async function replay(body, confirmDone) {
    let r = await post("/api/v1/replay", body);
    if (r.status === 409 && confirmDone) {
      const names = (list) => (list || []).map((d) => d.event_id + ":" + d.plugin).join(", ");
      const done = names(r.data.succeeded), running = names(r.data.running);
      const question = (done ? "Already delivered: " + done + ". " : "") +
        (running ? "Being called now: " + running + ". " : "") + "Run the plugin again?";
      if (!window.confirm(question)) { say("not replayed", false); return; }
      body.force = true;
      r = await post("/api/v1/replay", body);
    }
    if (r.ok) {
      const skipped = (r.data.skipped || []).map((d) => d.event_id + ":" + d.plugin).join(", ");
      say(r.data.replayed + " deliveries queued again" +
        (skipped ? "; left out (call running, or no longer a dead letter): " + skipped : ""), true);
      setTimeout(() => window.location.reload(), 2500);
    } else {
      say((r.data && r.data.error) || ("HTTP " + r.status), false);
    }
  }

  // Event page: one delivery.
  $$("button.replay-one").forEach((b) => b.addEventListener("click", () => {
    replay({ deliveries: [{ event_id: b.dataset.event, plugin: b.dataset.plugin }] }, true);
  }));

  // Dead letters: select + replay.
  const all = $("#pick-all");
  if (all) all.addEventListener("change", () => $$("input.pick").forEach((c) => { c.checked = all.checked; }));
  const selected = $("#replay-selected");
  if (selected) selected.addEventListener("click", () => {
    const picks = $$("input.pick").filter((c) => c.checked).map((c) => ({ event_id: c.dataset.event, plugin: c.dataset.plugin }));
    if (picks.length === 0) { say("select at least one dead letter", false); return; }
    replay({ deliveries: picks, dead_only: true }, false);
  });

  // Plugins page: reload.
  const reload = $("#reload");
  if (reload) reload.addEventListener("click", async () => {
    const r = await post("/api/v1/reload", {});
    say(r.ok ? "config reloaded" : ((r.data && r.data.error) || ("HTTP " + r.status)), r.ok);
  });

  // Overview: the cards, the plugin table and the last hour, refreshed every 5 s.
  const chart = $("#chart");
  const SVG = "http://www.w3.org/2000/svg";
  const series = [["stored", "#3355cc"], ["delivered", "#1a7f4b"], ["failed", "#b26a00"], ["dead", "#c0342b"]];
  function node(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function draw(hour) {
    const w = 600, h = 200, pad = 28;
    let max = 1;
    hour.forEach((m) => series.forEach(([k]) => { if (m[k] > max) max = m[k]; }));
    const svg = node("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none", role: "img", "aria-label": "events and deliveries per minute, last hour" });
    svg.appendChild(node("line", { x1: pad, y1: h - pad, x2: w, y2: h - pad, stroke: "#cfd4dc" }));
    const label = node("text", { x: 2, y: 12, "font-size": 10, fill: "#667085" });
    label.textContent = String(max);
    svg.appendChild(label);
    const ago = node("text", { x: pad, y: h - 8, "font-size": 10, fill: "#667085" });
    ago.textContent = "-60 min";
    svg.appendChild(ago);
    const now = node("text", { x: w - 24, y: h - 8, "font-size": 10, fill: "#667085" });
    now.textContent = "now";
    svg.appendChild(now);
    const n = Math.max(hour.length - 1, 1);
    series.forEach(([k, color]) => {
      const pts = hour.map((m, i) => {
        const x = pad + (i * (w - pad)) / n;
        const y = h - pad - (m[k] * (h - 2 * pad)) / max;
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" ");
      svg.appendChild(node("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, class: "series-" + k }));
    });
    chart.replaceChildren(svg);
  }
  function ago(s) {
    if (s === null || s === undefined) return "-";
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  }
  // The Status card and the plugin table as the page renders them (console/pages.rs).
  function badge(state) {
    const b = document.createElement("span");
    b.className = "badge " + state;
    b.textContent = state;
    return b;
  }
  function shown(v) {
    return v === null || v === undefined ? "-" : String(v);
  }
  function status(o) {
    const el = document.getElementById("ready");
    if (!el) return;
    if (o.ready) el.replaceChildren(badge("ready"));
    else el.replaceChildren(badge("not-ready"), " " + shown(o.reason));
  }
  function plugins(map) {
    const body = document.querySelector("#plugin-health tbody");
    if (!body) return;
    const rows = Object.keys(map).sort().map((name) => {
      const p = map[name];
      const when = typeof p.last_success_ms === "number" ? new Date(p.last_success_ms).toISOString() : "-";
      const cells = [
        name,
        badge(p.consecutive_failures > 0 ? "failing" : "healthy"),
        when,
        shown(p.pending),
        shown(p.calls_running) + "/" + shown(p.max_concurrency),
        shown(p.consecutive_failures),
        shown(p.last_error),
      ];
      const tr = document.createElement("tr");
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        if (i === 6) td.className = "err";
        td.append(c);
        tr.appendChild(td);
      });
      return tr;
    });
    body.replaceChildren(...rows);
  }
  async function refresh() {
    try {
      const res = await fetch(chart.dataset.source, { credentials: "same-origin" });
      if (!res.ok) return;
      const o = await res.json();
      draw(o.last_hour || []);
      const set = (id, v) => { const el = document.getElementById(id); if (el) (el.querySelector("a") || el).textContent = v; };
      set("rate-stored", o.per_minute.stored.toFixed(1));
      set("rate-delivered", o.per_minute.delivered.toFixed(1));
      set("rate-failed", o.per_minute.failed.toFixed(1));
      set("pending", String(o.pending));
      set("oldest", ago(o.oldest_pending_age_s));
      set("dead", String(o.dead_letters));
      status(o);
      plugins(o.plugins || {});
      chart.dataset.updated = String(Date.now());
    } catch (e) { /* the next tick tries again */ }
  }
  if (chart) { refresh(); setInterval(refresh, 5000); }
})();
