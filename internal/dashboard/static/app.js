// The Locus dashboard's page: it draws the view the local server sends
// over server-sent events (event "view"), each time it changes. Every
// value from the cluster goes into the page as text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function ago(t, now) {
  const s = Math.max(0, Math.round((now - new Date(t)) / 1000));
  if (s < 90) return s + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  return Math.round(s / 3600) + "h";
}

function duration(sec) {
  sec = Math.round(sec);
  const d = Math.floor(sec / 86400), h = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60, s = sec % 60;
  if (d) return d + "d" + h + "h";
  if (h) return h + "h" + m + "m";
  if (m) return m + "m" + s + "s";
  return s + "s";
}

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour12: false }) + "." + String(new Date(t).getMilliseconds()).padStart(3, "0");
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawNodes(v) {
  const nodes = (v.cluster && v.cluster.nodes) || [];
  const loads = {};
  for (const l of v.loads || []) loads[l.node] = l;
  const director = v.clusterip && v.clusterip.director ? v.clusterip.director.node : 0;
  const cards = nodes.map((n) => {
    const roles = [];
    if (v.cluster.master === n.node) roles.push("master");
    if (director === n.node) roles.push("director");
    const l = loads[n.node];
    const dl = el("dl", {});
    const row = (k, val) => dl.append(el("dt", {}, k), el("dd", {}, val));
    row("host", n.hostname || "-");
    row("addr", (n.addr || "-").replace(/:\d+$/, ""));
    row("run level", n.state === "Up" && n.runlevel ? String(n.runlevel) : "-");
    row("uptime", n.uptime ? duration(n.uptime) : "-");
    if (l && n.state === "Up") {
      row("load", l.mean.toFixed(2) + " (" + l.ncpu + " CPU)");
      if (l.mem_total_kib) row("memory", Math.round(100 * (l.mem_total_kib - l.mem_free_kib) / l.mem_total_kib) + "% of " + Math.round(l.mem_total_kib / 1024) + " MiB");
      row("processes", String(l.procs));
    }
    if (n.unreachable) row("unreachable", n.unreachable);
    return el("div", { class: "node", id: "node-" + n.node, "data-node": n.node, "data-state": n.state },
      el("div", { class: "title" }, el("span", {}, "node " + n.node), el("span", { class: "state" }, n.state)),
      el("div", { class: "role" }, roles.join(", ") || "\u00a0"),
      dl);
  });
  $("nodes").replaceChildren(...cards);
  const err = $("error");
  err.hidden = !v.error;
  err.textContent = v.error ? "the cluster did not answer: " + v.error : "";
  if (v.cluster) {
    const up = nodes.filter((n) => n.state === "Up").length;
    $("summary").textContent = up + " of " + nodes.length + " nodes Up · master node " + (v.cluster.master || "none") +
      " · quorum " + (v.cluster.quorum ? "yes" : "NO") + " · run level " + v.cluster.runlevel + " · via " + v.endpoint;
  } else {
    $("summary").textContent = "waiting for the cluster at " + v.endpoint;
  }
}

const stages = ["dhcp", "tftp", "ipxe", "kernel", "initramfs"];

function drawBoot(v, now) {
  const up = {};
  for (const n of (v.cluster && v.cluster.nodes) || []) up[n.node] = n.state;
  const rows = (v.boot || []).map((c) => {
    const at = stages.indexOf(c.stage);
    const st = el("div", { class: "stages" });
    for (let i = 0; i < stages.length; i++) st.append(el("span", { class: i < at ? "done" : i === at ? "now" : "" }, stages[i]));
    if (c.node && up[c.node]) st.append(el("span", { class: up[c.node] === "Up" ? "now" : "" }, up[c.node]));
    return el("tr", { "data-mac": c.mac },
      el("td", {}, c.mac), el("td", {}, c.node ? String(c.node) : "-"), el("td", {}, st),
      el("td", {}, c.status), el("td", {}, c.addr || "-"), el("td", {}, ago(c.last, now) + " ago"));
  });
  fill($("boot").tBodies[0], rows);
  const m = v.missing && v.missing.boot;
  $("boot-missing").hidden = !m;
  $("boot-missing").textContent = m ? "no registry on this endpoint: " + m : "";
}

function drawTimeline(v) {
  $("timeline").replaceChildren(...(v.timeline || []).map((e) =>
    el("li", { class: e.kind + " " + (e.state || ""), "data-kind": e.kind }, el("time", {}, clock(e.at)), e.text)));
}

function drawServices(v) {
  fill($("services").tBodies[0], (v.services || []).map((s) => {
    const ins = (s.instances_now || []).map((i) => (i.instance || s.name) + " on node " + (i.node || "-") + " " + i.state).join("; ");
    return el("tr", {}, el("td", {}, s.name + (s.stopped ? " (stopped)" : "")), el("td", {}, s.kind), el("td", {}, ins || "-"));
  }));
  const ip = v.clusterip;
  const box = $("clusterip");
  if (!ip || !ip.address) {
    box.textContent = "none";
    return;
  }
  const ports = (ip.table || []).map((vs) => vs.protocol + "/" + vs.port + " → " + ((vs.servers || []).join(", ") || "no server"));
  box.textContent = ip.address + " directed by node " + (ip.director.node || "none") + (ip.director.releasing ? " (giving it up)" : "") +
    (ports.length ? " · " + ports.join(" · ") : "");
}

function drawRoot(v) {
  const nodes = v.root || [];
  const servers = nodes.filter((r) => r.clients > 0);
  const relays = nodes.filter((r) => r.relay_connections > 0);
  const box = $("root");
  if (!servers.length && !relays.length) {
    box.textContent = "no CFS server seen";
    return;
  }
  const parts = servers.map((r) => "served by node " + r.node + " to " + r.clients + " client" + (r.clients === 1 ? "" : "s") + " (" + r.ops + " requests)");
  if (relays.length) {
    parts.push("relayed by node" + (relays.length > 1 ? "s " : " ") + relays.map((r) => r.node + (r.relay_connections > 1 ? " (failed over " + (r.relay_connections - 1) + "x)" : "")).join(", "));
  }
  box.textContent = parts.join(" · ");
}

function drawProcs(v) {
  $("proc-count").textContent = v.proc_count ? "(busiest " + (v.procs || []).length + " of " + v.proc_count + ", clusterwide)" : "";
  fill($("procs").tBodies[0], (v.procs || []).map((p) => el("tr", {},
    el("td", { class: "num" }, String(p.cpid)), el("td", { class: "num" }, String(p.node)), el("td", {}, p.user || String(p.uid)),
    el("td", {}, p.state), el("td", { class: "num" }, p.cpu.toFixed(1)), el("td", { class: "num" }, Math.round(p.rss / 1024) + " MiB"),
    el("td", {}, (p.args && p.args.length ? p.args.join(" ") : "[" + p.comm + "]").slice(0, 120)))));
}

function draw(v) {
  const now = new Date(v.at || Date.now());
  drawNodes(v);
  drawBoot(v, now);
  drawTimeline(v);
  drawServices(v);
  drawRoot(v);
  drawProcs(v);
  document.body.dataset.updated = v.at || "";
}

function connect() {
  const live = $("live");
  const es = new EventSource("/api/stream");
  es.addEventListener("view", (ev) => draw(JSON.parse(ev.data)));
  es.onopen = () => { live.textContent = "live"; live.classList.remove("off"); };
  es.onerror = () => { live.textContent = "reconnecting"; live.classList.add("off"); };
}

connect();
