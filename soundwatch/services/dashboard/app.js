// soundwatch dashboard: one panel per machine with its score timeline, threshold line,
// recent alerts and the last clip's log-mel (and anomaly map). Polls the server's JSON
// API; draws the charts as inline SVG, so it needs nothing from the internet.
// A server started with --token needs the page opened as /dashboard/#token=TOKEN.
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) sessionStorage.setItem("soundwatch-token", params.get("token"));
const TOKEN = sessionStorage.getItem("soundwatch-token");
const INTERVAL_MS = 1000 * Number(params.get("interval") || 2);
const KEEP = 2000; // scores kept per panel
// Ask again for this many seconds before the newest score seen: a writer (another
// process, another scoring thread) may commit a score stamped a moment earlier after it.
const OVERLAP_S = 10;
const SVG = "http://www.w3.org/2000/svg";

const machines = new Map(); // name -> {panel, scores, since, lastKey, ...}

async function api(path, asBlob = false) {
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return asBlob ? response : response.json();
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function fmt(x) {
  if (x === null || x === undefined) return "–";
  const size = Math.abs(x);
  if (size >= 1e5 || (size > 0 && size < 1e-3)) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

function clipName(r) {
  if (r.path) return r.path.split("/").pop();
  if (r.source && r.source.startsWith("http:")) return r.source.slice(5) + " (upload)";
  return (r.clip_key || "").slice(0, 19) + "…";
}

function panelFor(info) {
  let m = machines.get(info.name);
  if (m) return m;
  document.getElementById("empty")?.remove();
  const panel = el("section", { class: "panel", "data-machine": info.name });
  const title = el("h2");
  title.append(el("span", {}, info.name), el("span", { class: "badge", hidden: "" }, "ALERT"));
  const meta = el("div", { class: "meta" });
  const last = el("div", { class: "last", "data-role": "last" }, "no scores yet");
  const chart = svg("svg", { class: "timeline", viewBox: "0 0 560 190",
                             preserveAspectRatio: "none", role: "img" });
  const figure = el("figure", { hidden: "" });
  const img = el("img", { alt: "log-mel spectrogram of the last clip" });
  const caption = el("figcaption");
  figure.append(img, caption);
  const alertsTitle = el("div", { class: "meta" }, "Recent alerts");
  const alerts = el("ul", { class: "alerts", "data-role": "alerts" });
  alerts.append(el("li", { class: "closed" }, "none"));
  panel.append(title, meta, last, chart, figure, alertsTitle, alerts);
  document.getElementById("machines").append(panel);
  m = { panel, meta, last, chart, figure, img, caption, alerts, badge: title.lastChild,
        scores: [], seen: new Set(), since: null, lastKey: null, loadingFigure: false };
  machines.set(info.name, m);
  return m;
}

function drawTimeline(m) {
  const W = 560, H = 190, left = 48, right = 8, top = 10, bottom = 22;
  const chart = m.chart;
  chart.replaceChildren();
  const rows = m.scores.filter((r) => r.score !== null);
  chart.setAttribute("data-points", String(rows.length));
  if (!rows.length) {
    chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" },
                     "waiting for scores"));
    return;
  }
  const t0 = rows[0].scored_at, t1 = rows[rows.length - 1].scored_at;
  const values = rows.flatMap((r) => [r.score, r.threshold ?? r.score]);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  chart.append(svg("line", { x1: left, y1: top, x2: left, y2: H - bottom, class: "axis" }));
  chart.append(svg("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom,
                             class: "axis" }));
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    chart.append(svg("text", { x: left - 4, y: y(v) + 3, "text-anchor": "end", class: "tick" },
                     fmt(v)));
  }
  chart.append(svg("text", { x: left, y: H - 6, class: "tick" }, clock(t0)));
  chart.append(svg("text", { x: W - right, y: H - 6, "text-anchor": "end", class: "tick" },
                   clock(t1)));
  // The score trend, then the threshold as a step line (it may differ per machine ID).
  chart.append(svg("polyline", { class: "trend",
    points: rows.map((r) => `${x(r.scored_at).toFixed(1)},${y(r.score).toFixed(1)}`).join(" ") }));
  const steps = [];
  rows.forEach((r, i) => {
    if (r.threshold === null) return;
    const xi = x(r.scored_at), yi = y(r.threshold);
    if (i > 0 && rows[i - 1].threshold !== null) steps.push(`${xi.toFixed(1)},${y(rows[i - 1].threshold).toFixed(1)}`);
    steps.push(`${xi.toFixed(1)},${yi.toFixed(1)}`);
  });
  if (steps.length === 1) steps.push(`${W - right},${steps[0].split(",")[1]}`);
  chart.append(svg("polyline", { class: "threshold", points: steps.join(" ") }));
  const radius = rows.length > 400 ? 1.6 : 2.6;
  for (const r of rows) {
    const dot = svg("circle", { cx: x(r.scored_at).toFixed(1), cy: y(r.score).toFixed(1),
                                r: radius, class: "point-" + (r.decision ? 1 : 0) });
    dot.append(svg("title", {}, `${clock(r.scored_at)}  score ${fmt(r.score)}  ` +
                   `threshold ${fmt(r.threshold)}${r.decision ? "  ANOMALOUS" : ""}`));
    chart.append(dot);
  }
  const legend = svg("text", { x: (W + left) / 2, y: H - 6, "text-anchor": "middle",
                               class: "legend" });
  legend.append(svg("tspan", { class: "point-1" }, "- - "), "threshold  ",
                svg("tspan", { class: "point-0" }, "● "), "normal  ",
                svg("tspan", { class: "point-1" }, "● "), "anomalous");
  chart.append(legend);
}

function showLast(m, info) {
  const r = m.scores.length ? m.scores[m.scores.length - 1] : info.last;
  m.meta.textContent = [info.detector || "model not loaded here",
                        info.threshold_method && "threshold " + info.threshold_method,
                        info.model_digest && "model " + info.model_digest,
                        `${info.n_scores} scores stored`].filter(Boolean).join(" · ");
  if (!r) return;
  m.last.replaceChildren(
    "last clip ", el("b", {}, clipName(r)),
    ` at ${clock(r.scored_at)}: score ${fmt(r.score)}, threshold ${fmt(r.threshold)} → `,
    el("span", { class: "decision-" + (r.decision ? 1 : 0), "data-role": "decision" },
       r.decision ? "anomalous" : "normal"));
  m.last.setAttribute("data-score", String(r.score));
  if (r.clip_key !== m.lastKey && !m.loadingFigure) loadFigure(m, info.name, r.clip_key);
}

async function loadFigure(m, name, key) {
  m.loadingFigure = true;
  try {
    const response = await api(`/v1/machines/${encodeURIComponent(name)}/last.png`, true);
    const blob = await response.blob();
    if (m.img.src) URL.revokeObjectURL(m.img.src);
    m.img.src = URL.createObjectURL(blob);
    m.lastKey = response.headers.get("X-Clip-Key") || key;
    m.caption.textContent = response.headers.get("X-Anomaly-Map") === "yes"
      ? "Last clip: log-mel spectrogram and anomaly map"
      : "Last clip: log-mel spectrogram (this detector gives no anomaly map)";
    m.figure.hidden = false;
  } catch (e) {
    m.lastKey = key; // the clip's file is gone or cannot be drawn; do not retry it
    m.caption.textContent = "Last clip: " + e.message;
    m.figure.hidden = false;
  } finally {
    m.loadingFigure = false;
  }
}

function showAlerts(m, alerts) {
  const open = alerts.filter((a) => a.closed_at === null);
  m.panel.classList.toggle("alerting", open.length > 0);
  m.badge.hidden = open.length === 0;
  m.alerts.replaceChildren();
  if (!alerts.length) { m.alerts.append(el("li", { class: "closed" }, "none")); return; }
  for (const a of alerts.slice(0, 6)) {
    const state = a.closed_at === null ? "open" : "closed " + clock(a.closed_at);
    m.alerts.append(el("li", { class: a.closed_at === null ? "open" : "closed",
                               "data-rule": a.rule },
                       `${clock(a.opened_at)} · ${a.rule} · ${a.reason} (${state})`));
  }
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [{ machines: infos }, { alerts }] = await Promise.all([
      api("/v1/machines"), api("/v1/alerts?limit=200")]);
    for (const info of infos) {
      const m = panelFor(info);
      const query = m.since === null ? "limit=500" : `since=${m.since - OVERLAP_S}&limit=5000`;
      const { scores } = await api(`/v1/machines/${encodeURIComponent(info.name)}/scores?${query}`);
      const fresh = scores.filter((r) => !m.seen.has(r.clip_key));
      if (fresh.length) {
        for (const r of fresh) m.seen.add(r.clip_key);
        m.scores.push(...fresh);
        m.scores.sort((a, b) => a.scored_at - b.scored_at);
        m.since = m.scores[m.scores.length - 1].scored_at;
        if (m.scores.length > KEEP) {
          // Forget the keys of dropped scores only once no query can bring them back.
          for (const r of m.scores.splice(0, m.scores.length - KEEP)) {
            if (r.scored_at < m.since - OVERLAP_S) m.seen.delete(r.clip_key);
          }
        }
        drawTimeline(m);
      } else if (!m.chart.hasChildNodes()) {
        drawTimeline(m);
      }
      showLast(m, info);
      showAlerts(m, alerts.filter((a) => a.machine === info.name));
    }
    const open = alerts.filter((a) => a.closed_at === null);
    const summary = document.getElementById("open-alerts");
    summary.textContent = open.length ? `${open.length} open alert(s)` : "no open alerts";
    summary.classList.toggle("alerting", open.length > 0);
    const banner = document.getElementById("banner");
    const storeAlerts = open.filter((a) => a.rule === "store");
    banner.hidden = storeAlerts.length === 0;
    banner.textContent = storeAlerts.map((a) => `${a.machine}: ${a.reason}`).join(" · ");
    status.textContent = "updated " + new Date().toLocaleTimeString([], { hour12: false });
    status.classList.remove("error");
  } catch (e) {
    status.textContent = e.status === 401
      ? "this server needs a token: open /dashboard/#token=TOKEN"
      : "cannot reach the server: " + e.message;
    status.classList.add("error");
  }
  setTimeout(refresh, INTERVAL_MS);
}

refresh();
