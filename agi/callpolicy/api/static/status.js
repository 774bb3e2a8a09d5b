// The callpolicy status page: reads /v1/overview with the tab's API token and shows it.
// Every value from the API is set with textContent (customer ids, dialled numbers and rules
// come from outside): never innerHTML.
"use strict";

const REFRESH_MS = __REFRESH_MS__;
const KEY = "callpolicy.token";
const $ = (id) => document.getElementById(id);
let timer = null;

function text(value, fallback = "—") {
  return value === null || value === undefined || value === "" ? fallback : String(value);
}

function seconds(value) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(1)} s`;
}

function clock(iso) {
  if (!iso) return "—";
  const when = new Date(iso);
  return isNaN(when) ? String(iso) : when.toLocaleTimeString();
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (cls) td.className = cls;
  return td;
}

function state(row, value, good) {
  cell(row, value, value === null || value === undefined ? "muted"
    : (good.includes(value) ? "ok" : "bad"));
}

function fill(tableId, rows, render, empty) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    const row = body.insertRow();
    const td = cell(row, empty, "muted");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    return;
  }
  for (const item of rows) render(body.insertRow(), item);
}

function showLogin(message) {
  clearTimeout(timer);
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function render(data) {
  const daemon = data.daemon;
  const summary = $("summary");
  if (daemon.error) {
    summary.textContent = "No daemon answering";
    summary.className = "bad";
  } else {
    summary.textContent = daemon.healthy ? "Healthy" : "Degraded";
    summary.className = daemon.healthy ? "ok" : "bad";
  }
  $("problems").replaceChildren(...(daemon.problems || []).map((p) => {
    const li = document.createElement("li");
    li.textContent = p;
    return li;
  }));
  $("daemon-error").textContent = daemon.error || "";

  fill("nodes", daemon.nodes || [], (row, n) => {
    cell(row, n.this ? `${text(n.node, "this node")} (this node)` : n.node);
    cell(row, n.heartbeat_age_s === null || n.heartbeat_age_s === undefined
      ? "—" : `${seconds(n.heartbeat_age_s)} ago`, "num");
    state(row, n.ami, ["connected"]);
    state(row, n.database, ["ok"]);
    state(row, n.change_feed, ["listening", "poll"]);
    state(row, n.cluster_link, ["connected"]);
    cell(row, seconds(n.snapshot_age_s), "num");
    cell(row, n.live_calls, "num");
    state(row, n.counted === undefined ? null : (n.counted ? "yes" : "no"), ["yes"]);
  }, "no node reported");

  const live = daemon.live || {};
  $("live-total").textContent = live.up === undefined ? ""
    : `(${text(live.up, "unknown")} up, ${text(live.customers, 0)} customers)`;
  const customers = Object.entries(live.by_customer || {});
  fill("live-customers", customers, (row, [customer, c]) => {
    cell(row, customer);
    cell(row, c.concurrent, "num");
    cell(row, c.last_minute, "num");
    cell(row, c.risky, "num");
  }, "no live calls");
  const categories = Object.entries(live.by_category || {}).filter(([, n]) => n > 0);
  fill("live-categories", categories, (row, [category, n]) => {
    cell(row, category);
    cell(row, n, "num");
  }, live.by_category ? "no live calls" : "unknown");

  const refusals = data.refusals;
  $("refusals-error").textContent = refusals.error || "";
  fill("refusals", refusals.calls || [], (row, r) => {
    cell(row, clock(r.started_at));
    cell(row, r.customer_id);
    cell(row, r.dialled);
    cell(row, r.destination);
    cell(row, r.category);
    cell(row, r.reason, "bad");
    cell(row, r.rule);
    cell(row, r.node);
  }, "no refusals");

  const alerts = $("alerts");
  const open = daemon.alerts && Array.isArray(daemon.alerts.open) ? daemon.alerts.open : [];
  if (!open.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "none";
    alerts.replaceChildren(p);
  } else {
    const ul = document.createElement("ul");
    for (const a of open) {
      const li = document.createElement("li");
      const head = document.createElement("strong");
      head.textContent = `${text(a.kind)} ${a.severity ? `(${a.severity})` : ""}`;
      li.append(head, ` ${text(a.summary, "")}`);
      const since = a.since || a.last_seen;
      const count = a.count > 1 ? ` ×${a.count}` : "";
      li.append(document.createTextNode(`${count} — ${text(a.status, "open")} since ${clock(since)}`));
      ul.append(li);
    }
    alerts.replaceChildren(ul);
  }
  $("updated").textContent = clock(data.generated_at);
}

async function refresh() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return showLogin();
  try {
    const answer = await fetch("/v1/overview", {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
    if (answer.status === 401) {
      sessionStorage.removeItem(KEY);
      return showLogin("That token is not valid.");
    }
    if (!answer.ok) {
      let detail = `HTTP ${answer.status}`;
      try { detail = (await answer.json()).detail || detail; } catch (e) { /* not JSON */ }
      $("fetch-error").textContent = `The API refused: ${detail}`;
    } else {
      $("fetch-error").textContent = "";
      render(await answer.json());
    }
  } catch (e) {
    $("fetch-error").textContent = `The API did not answer (${e.message}); retrying.`;
  }
  $("main").hidden = false;
  $("login").hidden = true;
  timer = setTimeout(refresh, REFRESH_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (!token) return;
  sessionStorage.setItem(KEY, token);
  refresh();
});
$("forget").addEventListener("click", (event) => {
  event.preventDefault();
  sessionStorage.removeItem(KEY);
  showLogin("Token forgotten.");
});
refresh();
