// overlaynet's live lab view. The server sends the whole view once ("snapshot") and then
// patches ("patch": records set whole, keys deleted, timeline events) over server-sent events;
// this page never polls. The view is a flat map key -> record (overlaynet/web/model.py says
// which keys exist); the graph and the tables are redrawn from it for the keys a patch touched.
"use strict";

// Host and container states -> colours; the same as style.css's variables.
const COLOURS = {
  Ready: "#2e7d32", Suspect: "#f9a825", Unreachable: "#ef6c00", Down: "#c62828",
  running: "#66bb6a", exited: "#9e9e9e", created: "#90caf9",
  overlay: "#5e35b1", bridge: "#00838f", underlay: "#78909c",
};
// The timeline keeps this many rows in the page: a page left open for hours stays the same size.
const MAX_EVENT_ROWS = 500;
// Graph geometry (pixels in model space; the view fits it to the box).
const HOST_GAP = 300, ROW_HOST = 120, ROW_OVERLAY = 250, ROW_BRIDGE = 350, ROW_CTR = 460;
const CTR_GAP_X = 120, CTR_GAP_Y = 64, CTRS_PER_ROW = 2, OVERLAY_GAP = 150, BRIDGE_SHIFT = 80;

const view = new Map();
let cy = null;
let shapeKey = "";  // node ids last laid out: the graph is re-fitted when they change

function byId(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- the graph -------------------------------------------------------------------------

function initGraph() {
  cy = cytoscape({
    container: byId("graph"),
    layout: { name: "preset" },
    minZoom: 0.2,
    maxZoom: 3,
    style: [
      { selector: "node", style: {
        "label": "data(label)", "text-wrap": "wrap", "font-size": 11, "color": "#1d1d1f",
        "text-valign": "bottom", "text-margin-y": 4, "width": 34, "height": 34,
        "background-color": "data(colour)", "border-width": 1, "border-color": "#455a64",
      } },
      { selector: "node[kind='host']", style: {
        "shape": "round-rectangle", "width": 120, "height": 54, "text-valign": "center",
        "text-margin-y": 0, "color": "#fff", "font-size": 12, "font-weight": "bold",
      } },
      { selector: "node[kind='underlay']", style: {
        "shape": "barrel", "width": 220, "height": 30, "text-valign": "center",
        "text-margin-y": 0, "color": "#fff",
      } },
      { selector: "node[driver='overlay']", style: { "shape": "hexagon", "width": 46, "height": 40 } },
      { selector: "node[driver='bridge']", style: { "shape": "diamond" } },
      { selector: "node[kind='container']", style: { "width": 26, "height": 26 } },
      { selector: "node[?stale]", style: { "opacity": 0.45, "border-style": "dashed" } },
      { selector: "edge", style: {
        "width": 1.5, "line-color": "#b0bec5", "curve-style": "bezier",
        "label": "data(label)", "font-size": 9, "color": "#546e7a",
        "text-background-color": "#fff", "text-background-opacity": 0.8,
      } },
      { selector: "edge[kind='vtep']", style: {
        "line-color": COLOURS.overlay, "line-style": "dashed", "width": 2,
      } },
      { selector: "edge[kind='bridge']", style: { "line-color": COLOURS.bridge } },
      { selector: "edge[?stale]", style: { "opacity": 0.4 } },
      // A trace's path (trace.py path_on_graph) and where it stopped.
      { selector: "node.trace", style: { "border-width": 4, "border-color": "#d81b60" } },
      { selector: "edge.trace", style: { "line-color": "#d81b60", "width": 4 } },
      { selector: "node.trace[kind='container']", style: { "width": 30, "height": 30 } },
      { selector: ".trace-stop", style: {
        "border-width": 6, "border-color": "#b71c1c", "border-style": "double",
      } },
    ],
  });
  window.onetCy = cy;  // for the browser tests and for poking at it from the console
}

function hostOf(key) {
  const parts = key.split("/");
  if (["host", "members", "endpoints", "tables"].includes(parts[0])) return parts[1];
  if (parts[0] === "ctr" || (parts[0] === "net" && parts.length === 3)) return parts[1];
  return null;
}

function records(kind) {
  return [...view.entries()].filter(([, r]) => r.kind === kind);
}

// The view -> cytoscape elements with fixed positions: hosts in a row under the underlay,
// overlays between the hosts that have them, bridges and containers under their host.
function elements() {
  const nodes = [], edges = [];
  const hosts = records("host").map(([, r]) => r).sort((a, b) => a.name.localeCompare(b.name));
  const hostX = new Map(hosts.map((h, i) => [h.name, i * HOST_GAP]));
  const mid = hosts.length ? (hosts.length - 1) * HOST_GAP / 2 : 0;
  if (view.has("underlay")) {
    nodes.push({ data: { id: "underlay", kind: "underlay", label: view.get("underlay").name,
      colour: COLOURS.underlay }, position: { x: mid, y: 0 } });
  }
  for (const h of hosts) {
    const id = "host/" + h.name;
    const label = `${h.name}\n${h.ip}\n${h.state}${h.role ? " · " + h.role : ""}${availability(h)}`;
    nodes.push({ data: { id, kind: "host", label, state: h.state, colour: COLOURS[h.state] },
      position: { x: hostX.get(h.name), y: ROW_HOST } });
    if (view.has("underlay")) {
      edges.push({ data: { id: "ul:" + h.name, source: "underlay", target: id, label: h.ip } });
    }
  }
  const overlayAt = new Map();  // "x" -> how many overlays already sit there
  for (const [key, n] of records("network")) {
    let pos;
    if (n.driver === "overlay") {
      const xs = n.hosts.filter((h) => hostX.has(h)).map((h) => hostX.get(h));
      // An overlay no host has joined yet (a manager's record only) waits right of the hosts.
      const x = xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : hosts.length * HOST_GAP;
      const slot = overlayAt.get(x) || 0;
      overlayAt.set(x, slot + 1);
      // Overlays over the same hosts spread out sideways: 0, -1, +1, -2, +2 … gaps.
      const off = Math.ceil(slot / 2) * (slot % 2 ? -1 : 1) * OVERLAY_GAP;
      pos = { x: x + off, y: ROW_OVERLAY + (slot % 2) * 24 };
      for (const h of n.hosts) {
        if (!hostX.has(h)) continue;
        const stale = view.get("host/" + h)?.agent === "down";
        edges.push({ data: { id: `vtep:${key}:${h}`, kind: "vtep", source: "host/" + h,
          target: key, label: n.vni != null ? "VNI " + n.vni : "", stale } });
      }
    } else {
      const siblings = records("network").filter(([, m]) => m.host === n.host)
        .map(([k]) => k).sort();
      const j = siblings.indexOf(key);
      // Bridges sit left of their host's axis, so an overlay below the host keeps its own line.
      pos = { x: (hostX.get(n.host) || 0) - BRIDGE_SHIFT + (j - (siblings.length - 1) / 2) * 110,
        y: ROW_BRIDGE };
      edges.push({ data: { id: "br:" + key, kind: "bridge", source: "host/" + n.host,
        target: key, label: "", stale: !!n.stale } });
    }
    const label = n.driver === "overlay" ? `${n.name}\nVNI ${n.vni ?? "?"}` : n.name;
    nodes.push({ data: { id: key, kind: "network", driver: n.driver, label, stale: !!n.stale,
      colour: COLOURS[n.driver] || COLOURS.bridge }, position: pos });
  }
  const perHost = new Map();
  const ctrs = records("container").sort(([, a], [, b]) => a.name.localeCompare(b.name));
  for (const [key, c] of ctrs) {
    const i = perHost.get(c.host) || 0;
    perHost.set(c.host, i + 1);
    const col = i % CTRS_PER_ROW, row = Math.floor(i / CTRS_PER_ROW);
    const pos = { x: (hostX.get(c.host) || 0) + (col - (CTRS_PER_ROW - 1) / 2) * CTR_GAP_X,
      y: ROW_CTR + row * CTR_GAP_Y };
    nodes.push({ data: { id: key, kind: "container", label: c.name, state: c.state,
      stale: !!c.stale, colour: COLOURS[c.state] || COLOURS.exited }, position: pos });
    const attached = c.networks.filter((n) => n.key && view.has(n.key));
    for (const n of attached) {
      edges.push({ data: { id: `att:${key}:${n.key}`, source: key, target: n.key,
        label: n.ip.split("/")[0], stale: !!c.stale } });
    }
    if (!attached.length && view.has("host/" + c.host)) {
      edges.push({ data: { id: `att:${key}:host`, source: key, target: "host/" + c.host,
        label: "", stale: !!c.stale } });
    }
  }
  return { nodes, edges };
}

function drawGraph() {
  const { nodes, edges } = elements();
  const wanted = new Map([...nodes, ...edges].map((e) => [e.data.id, e]));
  cy.batch(() => {
    cy.elements().forEach((e) => { if (!wanted.has(e.id())) e.remove(); });
    for (const n of nodes) {
      const have = cy.getElementById(n.data.id);
      if (have.empty()) cy.add({ group: "nodes", ...n });
      else { have.data(n.data); have.position(n.position); }
    }
    for (const e of edges) {
      const have = cy.getElementById(e.data.id);
      if (have.empty()) cy.add({ group: "edges", ...e });
      else have.data(e.data);
    }
  });
  markTrace();
  const key = nodes.map((n) => n.data.id).sort().join(" ");
  if (key !== shapeKey) {
    shapeKey = key;
    cy.fit(undefined, 30);
  }
}

// ---- tables per host -------------------------------------------------------------------

function table(headers, rows, classes) {
  if (!rows.length) return el("p", { class: "empty" }, "none");
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  const body = rows.map((row, i) => {
    const tr = el("tr", classes?.(i) || {});
    row.forEach((cell, j) => {
      const cls = headers[j] === "STATE" ? "state-" + cell : "";
      tr.append(el("td", cls ? { class: cls } : {}, cell));
    });
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

// Above this many hosts a host's tables are drawn only while its section is open: every row of
// every host made a 50-host page 560k DOM nodes, slow to lay out (issue 17's load run).
const LAZY_HOSTS = 8;
// Hosts whose tables the user opened: kept open across redraws.
const openHosts = new Set();

function hostSection(name) {
  const h = view.get("host/" + name);
  const section = el("section", { class: "host", "data-host": name, "data-state": h.state },
    el("h3", {}, name, el("span", { class: "state" }, h.state),
      el("span", { class: "meta" },
        `${h.ip}${h.role ? " · " + h.role : ""}${availability(h)}` +
        `${h.node_id ? " · node " + h.node_id.slice(0, 12) : ""}`)));
  if (h.agent === "down") {
    section.append(el("p", { class: "stale" }, `agent not answering (${h.error}); ` +
      "tables below are the last known"));
  }
  const lazy = records("host").length > LAZY_HOSTS;
  const body = el("details", { class: "tables", "data-tables": name },
    el("summary", {}, lazy ? "tables (drawn when opened)" : "tables"));
  if (!lazy || openHosts.has(name)) {
    body.open = true;
    body.append(...hostTables(name));
  }
  body.addEventListener("toggle", () => {
    if (!body.open) {
      openHosts.delete(name);
    } else {
      openHosts.add(name);
      if (body.children.length === 1) body.append(...hostTables(name));
    }
  });
  section.append(body);
  return section;
}

function hostTables(name) {
  const ctrs = records("container").map(([, c]) => c).filter((c) => c.host === name)
    .sort((a, b) => a.name.localeCompare(b.name));
  const members = view.get("members/" + name);
  const endpoints = view.get("endpoints/" + name);
  const out = [];
  out.push(el("h4", {}, "Containers"), table(
    ["NAME", "IMAGE", "STATE", "EXIT", "NETWORKS"],
    ctrs.map((c) => [c.name, c.image, c.state, c.exit_code ?? "",
      c.networks.map((n) => `${n.name} ${n.ip}`.trim()).join(", ")]),
    (i) => ({ "data-container": ctrs[i].name, "data-state": ctrs[i].state })));
  out.push(el("h4", {}, "Gossip members"), table(
    ["HOST", "NODE", "ADDRESS", "STATE", "INCARNATION"],
    (members?.rows || []).map((m) => [m.host || "?", m.node.slice(0, 12), m.addr, m.state,
      m.incarnation]),
    (i) => ({ "data-member": members.rows[i].host || members.rows[i].addr,
      "data-state": members.rows[i].state })));
  const tables = Object.entries(endpoints?.tables || {});
  if (!tables.length) out.push(el("h4", {}, "Endpoint tables"), table([], []));
  for (const [net, rows] of tables) {
    out.push(el("h4", {}, `Endpoint table: ${net}`), table(
      ["NAME", "IP", "MAC", "HOST", "OWNER", "LAMPORT"],
      rows.map((r) => [r.name, r.ip, r.mac, r.host, r.owner.slice(0, 12), r.ltime])));
  }
  for (const net of view.get("tables/" + name)?.networks || []) {
    out.push(...networkTables(name, net));
  }
  return out;
}

// One network's data-plane tables on one host (overlaynet/web/tables.py builds the record).
function networkTables(host, net) {
  const title = `${net.name}${net.vni != null ? " (VNI " + net.vni + ")" : ""}`;
  const out = [];
  if (net.vni != null) {
    out.push(el("h4", {}, `FDB: ${title}`), table(
      ["MAC", "REMOTE VTEP", "HOST", "TX FRAMES", "TX BYTES", "RX FRAMES", "RX BYTES", "LEARNED"],
      net.fdb.map((f) => [f.mac, f.remote_ip, f.remote_host || "?", f.tx_frames, f.tx_bytes,
        f.rx_frames, f.rx_bytes, f.learned ? "yes" : "no"]),
      (i) => ({ "data-fdb-mac": net.fdb[i].mac, "data-network": net.name })));
    out.push(el("h4", {}, `ARP answers: ${title}`), table(
      ["IP", "MAC"], net.arp.map((a) => [a.ip, a.mac]),
      (i) => ({ "data-arp-ip": net.arp[i].ip })));
  }
  if (net.dns.length) {
    out.push(el("h4", {}, `DNS records: ${title}`), table(
      ["NAME", "KIND", "ADDRESS", "ORIGIN"], net.dns.map((r) => [r.name, r.kind, r.address, r.origin]),
      (i) => ({ "data-dns-name": net.dns[i].name })));
  }
  if (net.vips.length) {
    const label = net.published ? "Published ports" : "VIPs";
    const rows = net.vips.flatMap((v) => (v.backends.length ? v.backends : [null]).map((b) =>
      [v.vip, v.service, b ? b.address : "-", b ? b.task : "", b ? b.connections : "",
        b ? b.active : ""]));
    out.push(el("h4", {}, `${label}: ${title}`), table(
      [net.published ? "PUBLISHED" : "VIP", "SERVICE", "BACKEND", "TASK", "CONNECTIONS", "ACTIVE"],
      rows));
  }
  return out;
}

function drawHosts(touched) {
  const box = byId("hosts");
  const names = records("host").map(([, h]) => h.name).sort();
  for (const old of [...box.children]) {
    if (!names.includes(old.dataset.host)) old.remove();
  }
  names.forEach((name, i) => {
    const have = box.querySelector(`section[data-host="${CSS.escape(name)}"]`);
    if (have && touched && !touched.has(name)) return;
    const fresh = hostSection(name);
    if (have) have.replaceWith(fresh);
    else box.insertBefore(fresh, box.children[i] || null);
  });
}

// `node ls`'s AVAILABILITY when it is not the usual active (drain, pause), as the CLI shows it.
function availability(h) {
  return h.availability && h.availability !== "active" ? " · " + h.availability : "";
}

function drawSummary() {
  const hosts = records("host").map(([, h]) => h);
  const ready = hosts.filter((h) => h.state === "Ready").length;
  const ctrs = records("container").map(([, c]) => c);
  const running = ctrs.filter((c) => c.state === "running").length;
  const nets = records("network").length;
  byId("summary").textContent =
    `${ready}/${hosts.length} hosts Ready · ${running}/${ctrs.length} containers running · ` +
    `${nets} networks`;
}

// ---- the timeline ----------------------------------------------------------------------

function addEvents(events) {
  const list = byId("events");
  const filter = byId("event-filter").value;
  for (const e of events) {
    const t = new Date(e.t * 1000);
    const li = el("li", { class: e.level, "data-kind": e.kind },
      el("time", { dateTime: t.toISOString() }, t.toLocaleTimeString([], { hour12: false })),
      " ", el("span", { class: "kind" }, e.kind), " ", e.text);
    li.hidden = !!filter && e.kind !== filter;
    list.prepend(li);
  }
  while (list.children.length > MAX_EVENT_ROWS) list.lastElementChild.remove();
}

function noteDropped(n) {
  if (!n) return;
  const p = byId("dropped");
  const before = Number(p.dataset.count || 0) + n;
  p.dataset.count = String(before);
  p.textContent = `${before} events skipped: this page fell behind the stream`;
  p.hidden = false;
}

// ---- the stream ------------------------------------------------------------------------

function redraw(touched) {
  drawGraph();
  drawHosts(touched);
  drawSummary();
  if (actionsAllowed()) { drawPacketChoices(); drawTraceChoices(); }
}

function actionsAllowed() {
  return !byId("packets-panel").hidden;
}

function onSnapshot(msg) {
  byId("packets-panel").hidden = !msg.actions;
  byId("trace-panel").hidden = !msg.actions;
  view.clear();
  for (const [k, v] of Object.entries(msg.view)) view.set(k, v);
  byId("lab-name").textContent = "lab " + msg.lab;
  document.title = "overlaynet lab " + msg.lab;
  byId("events").replaceChildren();
  addEvents(msg.events);
  redraw(null);
}

function onPatch(msg) {
  const touched = new Set();
  for (const key of msg.del) {
    const host = hostOf(key);
    if (host) touched.add(host);
    view.delete(key);
  }
  for (const [key, rec] of Object.entries(msg.set)) {
    const host = hostOf(key);
    if (host) touched.add(host);
    view.set(key, rec);
  }
  addEvents(msg.events);
  noteDropped(msg.dropped);
  redraw(touched);
}

function connect() {
  const conn = byId("conn");
  const source = new EventSource("/events");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => {
    // EventSource reconnects by itself (the server's retry: line) and gets a new snapshot.
    conn.textContent = "reconnecting…";
    conn.className = "conn connecting";
  };
  source.addEventListener("snapshot", (ev) => onSnapshot(JSON.parse(ev.data)));
  source.addEventListener("patch", (ev) => onPatch(JSON.parse(ev.data)));
  source.addEventListener("refused", (ev) => {
    source.close();
    conn.textContent = JSON.parse(ev.data).error;
    conn.className = "conn refused";
  });
}

// ---- packets (only when the server runs with --allow-actions) ---------------------------

// The overlays and running containers the packets form offers, refreshed with the view.
function drawPacketChoices() {
  const nets = records("network").map(([, n]) => n).filter((n) => n.driver === "overlay");
  const ctrs = records("container").map(([, c]) => c)
    .filter((c) => c.state === "running" && c.networks.some((n) => n.ip));
  fillSelect(byId("pkt-network"), nets.map((n) => [n.id, `${n.name} (VNI ${n.vni})`]));
  fillSelect(byId("pkt-from"), [["", "(no ping)"],
    ...ctrs.map((c) => [`${c.host}/${c.name}`, `${c.name} on ${c.host}`])]);
  const targets = ctrs.flatMap((c) => c.networks.filter((n) => n.ip).map((n) =>
    [n.ip.split("/")[0], `${c.name} ${n.ip.split("/")[0]} (${n.name})`]));
  fillSelect(byId("pkt-to"), targets);
}

function fillSelect(select, options) {
  const keep = select.value;
  const same = select.options.length === options.length &&
    options.every(([v], i) => select.options[i].value === v);
  if (same) return;
  select.replaceChildren(...options.map(([v, text]) => el("option", { value: v }, text)));
  if (options.some(([v]) => v === keep)) select.value = keep;
}

async function capturePackets(ev) {
  ev.preventDefault();
  const status = byId("pkt-status");
  const [host, container] = byId("pkt-from").value.split("/");
  const body = { network: byId("pkt-network").value };
  if (container) Object.assign(body, { host, container, target: byId("pkt-to").value });
  status.textContent = "capturing…";
  byId("pkt-go").disabled = true;
  try {
    const res = await fetch("/api/actions/capture", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const doc = await res.json();
    if (!res.ok) { status.textContent = doc.error || res.statusText; return; }
    status.textContent = `${doc.packets.length} packets` + (doc.ping ? ` · ${doc.ping}` : "");
    drawPackets(doc.packets);
  } catch (e) {
    status.textContent = "capture failed: " + e;
  } finally {
    byId("pkt-go").disabled = false;
  }
}

function drawPackets(packets) {
  const list = byId("packets");
  list.replaceChildren(...packets.map((p, i) => {
    const layers = el("ol", { class: "layers" }, ...p.layers.map((l, depth) =>
      el("li", { "data-layer": l.name, style: `margin-left:${depth}em` },
        el("b", {}, l.name), " ", l.fields)));
    const join = el("p", { class: "join" }, p.decided_by || "");
    return el("li", { class: "packet", "data-vni": p.vni ?? "", "data-index": i },
      el("span", { class: "meta" }, `#${i + 1} ${p.length} bytes`), layers, join);
  }));
}

// ---- a trace (only with --allow-actions) -----------------------------------------------

// The last trace's path on the graph: element ids, kept across redraws (new elements too).
let tracePath = { nodes: [], edges: [], stop: null };

function markTrace() {
  cy.elements().removeClass("trace trace-stop");
  for (const id of [...tracePath.nodes, ...tracePath.edges]) {
    cy.getElementById(id).addClass("trace");
  }
  if (tracePath.stop) cy.getElementById(tracePath.stop).addClass("trace-stop");
}

function drawTraceChoices() {
  const ctrs = records("container").map(([, c]) => c)
    .filter((c) => c.state === "running" && c.networks.some((n) => n.ip))
    .sort((a, b) => a.name.localeCompare(b.name));
  fillSelect(byId("trace-from"),
    ctrs.map((c) => [`${c.host}/${c.name}`, `${c.name} on ${c.host}`]));
  const list = byId("trace-targets");
  const names = ctrs.flatMap((c) => [c.name,
    ...c.networks.filter((n) => n.ip).map((n) => n.ip.split("/")[0])]);
  if (list.children.length !== names.length) {
    list.replaceChildren(...names.map((v) => el("option", { value: v })));
  }
}

async function runTrace(ev) {
  ev.preventDefault();
  const status = byId("trace-status");
  const [host, container] = byId("trace-from").value.split("/");
  const kind = byId("trace-proto").value;
  const proto = kind === "icmp" ? "icmp" : `${kind}:${byId("trace-port").value}`;
  const body = { host, container, to: byId("trace-to").value.trim(), proto };
  status.textContent = "tracing…";
  byId("trace-go").disabled = true;
  try {
    const res = await fetch("/api/actions/trace", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const doc = await res.json();
    if (!res.ok) { status.textContent = doc.error || res.statusText; return; }
    status.textContent = "";
    drawTrace(doc);
  } catch (e) {
    status.textContent = "trace failed: " + e;
  } finally {
    byId("trace-go").disabled = false;
  }
}

function drawTrace(doc) {
  const first = doc.hops.find((h) => h.t != null)?.t;
  byId("trace-hops").replaceChildren(...doc.hops.map((h, i) => el("li",
    { class: "hop", "data-host": h.host, "data-stage": h.stage },
    el("span", { class: "meta" }, `#${i + 1}` +
      (h.t != null && first != null ? ` +${((h.t - first) * 1000).toFixed(3)} ms` : "")),
    " ", el("b", {}, h.host), " ", el("span", { class: "kind" }, h.stage), " ",
    h.where, " — ", h.decision)));
  const result = byId("trace-result");
  if (doc.reached) {
    result.textContent = "Result: answered";
    result.className = "reached";
  } else if (doc.stop) {
    const on = doc.stop.host ? ` on ${doc.stop.host}` : "";
    result.textContent = `Result: stopped at ${doc.stop.where}${on}: ${doc.stop.why}`;
    result.className = "stopped";
  }
  result.dataset.stopWhere = doc.stop ? doc.stop.where : "";
  tracePath = doc.path || { nodes: [], edges: [], stop: null };
  markTrace();
}

if (byId("trace-form")) {
  byId("trace-form").addEventListener("submit", runTrace);
}

if (byId("packets-form")) {
  byId("packets-form").addEventListener("submit", capturePackets);
}

byId("event-filter").addEventListener("change", () => {
  const filter = byId("event-filter").value;
  for (const li of byId("events").children) li.hidden = !!filter && li.dataset.kind !== filter;
});
initGraph();
connect();
