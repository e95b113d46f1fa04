// Spike's live sale dashboard: polls /v1/admin/dashboard once a second
// with the admin token pasted at sign-in, and flips switches through
// PUT /v1/admin/switches/{name} after a confirmation. No dependencies.
"use strict";

const POLL_MS = 1000;
const HISTORY = 120; // points kept for the charts (two minutes)
const OUTCOMES = [
  ["accepted", "202 accepted", "#2e7d32"],
  ["sold_out", "sold out", "#6a1b9a"],
  ["limit_exceeded", "limit", "#0277bd"],
  ["rate_limited", "rate limited", "#ef6c00"],
  ["overloaded", "overloaded", "#c62828"],
  ["switched_off", "switched off", "#455a64"],
  ["other", "other", "#9e9e9e"],
];

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("spike-token") || "", timer: null, history: [] };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

const fmt = (v, digits = 0) => (v == null || Number.isNaN(v)) ? "–" : Number(v).toLocaleString("en", { maximumFractionDigits: digits, minimumFractionDigits: digits });

async function api(method, path, body) {
  const resp = await fetch(path, {
    method, cache: "no-store",
    headers: Object.assign({ Authorization: "Bearer " + state.token }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const msg = (data.error && (data.error.message || data.error.code)) || data.message || resp.statusText;
    const err = new Error(resp.status + " " + msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (cls || "");
}

function signIn(token) {
  state.token = token.trim();
  sessionStorage.setItem("spike-token", state.token);
  poll(true);
}

function signOut(message) {
  clearTimeout(state.timer);
  state.token = "";
  sessionStorage.removeItem("spike-token");
  $("board").hidden = true;
  $("login-panel").hidden = false;
  $("logout").hidden = true;
  $("login-error").textContent = message || "";
  setStatus("signed out");
}

async function poll(first) {
  clearTimeout(state.timer);
  if (!state.token) return;
  try {
    const snap = await api("GET", "/v1/admin/dashboard");
    if (first || $("board").hidden) {
      $("login-panel").hidden = true;
      $("board").hidden = false;
      $("logout").hidden = false;
    }
    render(snap);
    setStatus("live", "live");
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      signOut("The server refused this token (" + err.message + "): an admin token is needed.");
      return;
    }
    setStatus("no data: " + err.message, "error");
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function render(s) {
  state.history.push(s);
  if (state.history.length > HISTORY) state.history.shift();
  renderOutcomes(s);
  const lat = s.latency_ms || {};
  $("p50").textContent = fmt(lat.p50, 1);
  $("p99").textContent = fmt(lat.p99, 1);
  $("backlog").textContent = s.stream_backlog == null ? (s.stream_backlog_error ? "error" : "–") : fmt(s.stream_backlog);
  $("backlog").title = s.stream_backlog_error || "";
  $("pending").textContent = fmt(s.orders_pending);
  $("persisted").textContent = fmt(s.persisted_per_second, 0);
  $("drain").textContent = fmt(s.drain_seconds, 1);
  renderSales(s);
  renderDeps(s);
  renderSwitches(s.switches || []);
  const h = state.history;
  drawChart($("chart-rates"), OUTCOMES.map(([k, , c]) => ({ color: c, values: h.map((x) => (x.per_second || {})[k] || 0) })));
  drawChart($("chart-latency"), [
    { label: "p50 ms", color: "#0277bd", values: h.map((x) => (x.latency_ms || {}).p50 || 0) },
    { label: "p99 ms", color: "#c62828", values: h.map((x) => (x.latency_ms || {}).p99 || 0) },
  ]);
  drawChart($("chart-backlog"), [
    { label: "stream backlog", color: "#6a1b9a", values: h.map((x) => x.stream_backlog || 0) },
    { label: "orders pending", color: "#ef6c00", values: h.map((x) => x.orders_pending || 0) },
  ]);
  $("updated").textContent = "updated " + new Date(s.at).toLocaleTimeString() +
    (s.interval_seconds ? " · rates over " + fmt(s.interval_seconds, 1) + " s" : " · rates from the next update");
}

function renderOutcomes(s) {
  const box = $("outcomes");
  box.replaceChildren(...OUTCOMES.map(([k, name, color]) =>
    el("div", { class: "tile", style: "--c:" + color, id: "outcome-" + k },
      el("b", { id: "rate-" + k }, fmt((s.per_second || {})[k], 0)),
      el("span", {}, name + " /s"),
      el("small", { id: "total-" + k }, fmt((s.placements || {})[k]) + " in all"))));
}

function renderSales(s) {
  $("sales-error").textContent = s.sales_error || "";
  const rows = (s.sales || []).map((x) => {
    const soldPct = x.stock > 0 && x.sold != null ? 100 * x.sold / x.stock : 0;
    return el("tr", { "data-sale": x.id },
      el("td", {}, x.id), el("td", {}, x.sku), el("td", { class: x.state }, x.state),
      el("td", { class: "num" }, fmt(x.stock)),
      el("td", { class: "num remaining" }, fmt(x.remaining)),
      el("td", { class: "num sold" }, fmt(x.sold)),
      el("td", {}, el("div", { class: "bar", title: fmt(soldPct, 1) + " % sold" }, el("i", { style: "width:" + soldPct + "%" }))));
  });
  $("sales").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "note" }, "no running or recent sale"))]));
}

function renderDeps(s) {
  const rows = (s.dependencies || []).map((d) => el("tr", { "data-dependency": d.name },
    el("td", {}, d.name),
    el("td", { class: d.breaker }, d.breaker),
    el("td", {}, d.bulkhead_size == null ? "–" : fmt(d.bulkhead_in_use) + " / " + fmt(d.bulkhead_size)),
    el("td", {}, d.limit == null ? "–" : fmt(d.in_flight) + " / " + fmt(d.limit))));
  $("deps").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "note" }, "no guarded dependency"))]));
  const a = s.admission;
  $("admission").textContent = a ? "admission: " + fmt(a.in_flight) + " in flight of a limit of " + fmt(a.limit) : "";
}

// Switch rows are rebuilt only when a value changes, so that a value being
// typed is not wiped by the next poll.
function renderSwitches(list) {
  const key = JSON.stringify(list.map((x) => [x.name, x.value]));
  if (key === state.switchKey) return;
  state.switchKey = key;
  $("switches").replaceChildren(...list.map((sw) => {
    const isBool = sw.value === "true" || sw.value === "false";
    const changed = sw.value !== sw.default;
    let control;
    if (isBool) {
      const next = sw.value === "true" ? "false" : "true";
      control = el("button", { type: "button", class: "flip" + (next === "false" ? " danger" : "") }, next === "false" ? "Turn off" : "Turn on");
      control.addEventListener("click", () => confirmSet(sw.name, sw.value, next));
    } else {
      const input = el("input", { class: "value", value: sw.value, "aria-label": sw.name });
      const set = el("button", { type: "button", class: "set" }, "Set");
      set.addEventListener("click", () => confirmSet(sw.name, sw.value, input.value.trim()));
      control = el("span", {}, input, " ", set);
    }
    return el("tr", { "data-switch": sw.name, title: sw.help },
      el("td", {}, sw.name, el("div", { class: "note" }, sw.help)),
      el("td", { class: "value" + (changed ? " off" : ""), title: "default " + sw.default }, sw.value),
      el("td", {}, control));
  }));
}

function confirmSet(name, from, to) {
  if (to === "" || to === from) return;
  const dialog = $("confirm");
  $("confirm-text").textContent = "Set switch " + name + " from " + from + " to " + to + "? It applies to every instance at once.";
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "yes") return;
    try {
      const st = await api("PUT", "/v1/admin/switches/" + encodeURIComponent(name), { value: to });
      $("switch-result").textContent = name + " is now " + st.value;
      state.switchKey = "";
      poll();
    } catch (err) {
      $("switch-result").textContent = "could not set " + name + ": " + err.message;
    }
  };
  dialog.showModal();
}

// drawChart draws line series on a canvas, each scaled to the largest
// value of all of them, with the maximum written in the corner.
function drawChart(canvas, series) {
  // Draw at the size shown, so that text is not stretched.
  if (canvas.clientWidth > 0) {
    canvas.width = canvas.clientWidth;
    canvas.height = canvas.clientHeight;
  }
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  ctx.strokeStyle = "#dfe3ea";
  ctx.beginPath(); ctx.moveTo(0, h - pad); ctx.lineTo(w, h - pad); ctx.stroke();
  for (const s of series) {
    if (s.values.length < 2) continue;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.values.forEach((v, i) => {
      const x = w - (s.values.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - pad - (v / max) * (h - 2 * pad - 14);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#6a7383";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText("max " + fmt(max, max < 10 ? 1 : 0), 6, 14);
  // Legend, right-aligned, for series that have a label.
  let x = w - 6;
  ctx.textAlign = "right";
  for (const s of series.filter((s) => s.label).reverse()) {
    ctx.fillStyle = s.color;
    ctx.fillText("— " + s.label, x, 14);
    x -= ctx.measureText("— " + s.label).width + 12;
  }
  ctx.textAlign = "left";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
  $("logout").addEventListener("click", () => signOut());
  if (state.token) poll(true);
});
