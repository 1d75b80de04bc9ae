"use strict";
// Shoal's dashboard. It talks to the API server it was served by, with the token the user logs
// in with (kept in this tab's sessionStorage only), so it sees exactly what that token may see:
// a tenant its own namespaces, the admin everything. Each list is read once and then followed
// with a watch, so pages change as the cluster does. Text from the cluster is only ever set as
// text (never parsed as HTML): names, messages and logs are a tenant's to choose.

const TOKEN_KEY = "shoal-token";
// A watch sends a bookmark at least every 10 s; one silent for this long is taken for dead.
const SILENT_WATCH_MS = 30000;
const RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
// The longest log line kept whole.
const MAX_LINE = 64 * 1024;
// The most log lines a followed log keeps on the page (older ones are dropped).
const LOG_LINES = 5000;

const state = { token: sessionStorage.getItem(TOKEN_KEY), who: null, informers: new Map(), log: null };

const $ = (selector) => document.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An element with `text` (as text) and `attributes`. */
function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** Fetches `path` with the token; a non-2xx answer throws with the server's message. */
async function api(path, signal) {
  const response = await fetch(path, { headers: { authorization: `Bearer ${state.token}` }, signal });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(body.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return response;
}

/** Reads newline-delimited text from `response`, calling `line` for each line (a line longer
 * than MAX_LINE is passed on in pieces, so a guest that never writes a newline cannot grow the
 * page without bound); `onChunk` hears every chunk. */
async function lines(response, line, onChunk) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (buffered) line(buffered);
      return;
    }
    onChunk?.();
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      line(buffered.slice(0, end));
      buffered = buffered.slice(end + 1);
    }
    while (buffered.length > MAX_LINE) {
      line(buffered.slice(0, MAX_LINE));
      buffered = buffered.slice(MAX_LINE);
    }
  }
}

const keyOf = (o) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;

/** Waits before trying `path` again: 1 s, doubling to 30 s, with jitter, so that a refusal
 * (429 past the token's watch limit, 5xx during an election) is not met with a storm. */
function backOff(failures) {
  const ms = Math.min(RETRY_MS * 2 ** failures, MAX_RETRY_MS);
  return sleep(ms / 2 + Math.random() * (ms / 2));
}

/** One kind's objects at some paths (one per namespace, or one for the cluster): listed, then
 * watched from the list's revision; a watch that ends or falls silent is resumed from the last
 * revision it told (a 410 lists again). A 401 ends the session; a 403 stops that path. */
class Informer {
  constructor(paths) {
    this.objects = new Map();
    this.errors = new Map();
    this.listeners = new Set();
    this.stop = new AbortController();
    for (const path of paths) this.follow(path);
  }

  get items() {
    return [...this.objects.values()];
  }

  notify() {
    for (const listener of this.listeners) listener();
  }

  close() {
    this.stop.abort();
    this.listeners.clear();
  }

  /** Lists `path`, replacing what it held; returns the list's revision. */
  async relist(path, signal) {
    const list = await (await api(path, AbortSignal.any([signal, AbortSignal.timeout(SILENT_WATCH_MS)]))).json();
    for (const [key, entry] of [...this.objects]) if (entry.path === path) this.objects.delete(key);
    for (const object of list.items) this.objects.set(keyOf(object), { path, object });
    return list.resourceVersion;
  }

  /** Follows a watch of `path` from `revision` until it ends; returns the last revision told. */
  async watch(path, revision, signal) {
    const silent = new AbortController();
    const both = AbortSignal.any([signal, silent.signal]);
    let silence = setTimeout(() => silent.abort(), SILENT_WATCH_MS);
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => silent.abort(), SILENT_WATCH_MS);
    };
    try {
      const response = await api(`${path}?watch=true&resourceVersion=${revision}`, both);
      heard();
      await lines(
        response,
        (line) => {
          if (!line.trim()) return;
          const event = JSON.parse(line);
          // A bookmark says everything up to its revision came; a change says only that
          // everything before its revision did (others may share it), so a break resumes
          // there and applies again what it already had.
          if (event.type === "BOOKMARK") {
            revision = Math.max(revision, event.revision ?? revision);
            return;
          }
          revision = Math.max(revision, (event.revision ?? revision + 1) - 1);
          if (event.type === "DELETED") this.objects.delete(keyOf(event.object));
          else this.objects.set(keyOf(event.object), { path, object: event.object });
          this.notify();
        },
        heard,
      );
    } catch (error) {
      // A silent watch is resumed like one that ended; anything else is the caller's.
      if (!silent.signal.aborted || signal.aborted) throw error;
    } finally {
      clearTimeout(silence);
    }
    return revision;
  }

  async follow(path) {
    const signal = this.stop.signal;
    let revision = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (revision === null) {
          revision = await this.relist(path, signal);
          this.errors.delete(path);
          this.notify();
        }
        revision = await this.watch(path, revision, signal);
        failures = 0;
      } catch (error) {
        if (signal.aborted) return;
        if (error.status === 401) return sessionEnded();
        if (error.status === 410) revision = null;
        this.errors.set(path, error.message);
        this.notify();
        if (error.status === 403) return;
        failures += 1;
      }
      await backOff(failures);
    }
  }
}

/** The informer of `plural` for this token: cluster-wide for the admin, else per namespace. */
function informer(plural) {
  if (!state.informers.has(plural)) {
    const who = state.who;
    const paths =
      who.role === "admin" || plural === "nodes"
        ? [`/api/v1/${plural}`]
        : who.namespaces.map((ns) => `/api/v1/namespaces/${encodeURIComponent(ns)}/${plural}`);
    state.informers.set(plural, new Informer(paths));
  }
  return state.informers.get(plural);
}

/** Closes the watches no page shown needs (a tenant's watches count against its token's limit). */
function closeInformers(keep) {
  for (const [plural, i] of state.informers) {
    if (!keep.includes(plural)) {
      i.close();
      state.informers.delete(plural);
    }
  }
}

/** The token is no longer taken (revoked, or the cluster's was replaced): back to the login. */
function sessionEnded() {
  if (!state.token) return;
  closeInformers([]);
  state.log?.abort();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("#nav").hidden = true;
  $("#page").replaceChildren();
  $("#login").hidden = false;
  $("#login-error").textContent = "The token is no longer valid here: log in again.";
}

/** A table with `columns` and one row per item of `rows` (each a list of cells). */
function table(id, columns, rows) {
  const view = element("table", null, { id });
  const head = view.createTHead().insertRow();
  for (const column of columns) head.append(element("th", column));
  const body = view.createTBody();
  for (const { key, cells } of rows) {
    const row = body.insertRow();
    row.dataset.key = key;
    for (const cell of cells) {
      const td = row.insertCell();
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell ?? "";
    }
  }
  return view;
}

const byKey = (a, b) => keyOf(a).localeCompare(keyOf(b));
const condition = (object, type) => (object.status?.conditions ?? []).find((c) => c.type === type);

function rollout(workload) {
  const status = workload.status ?? {};
  const want = status.desiredReplicas ?? workload.spec.replicas ?? 1;
  const current = status.observedGeneration >= (workload.metadata.generation ?? 0);
  const failure = condition(workload, "ReplicaFailure");
  if (failure?.status === "True") return `failing: ${failure.message ?? failure.reason ?? ""}`;
  const updated = status.updatedReplicas ?? 0;
  if (current && updated === want && (status.replicas ?? 0) === want && (status.availableReplicas ?? 0) >= want)
    return "complete";
  return `in progress: ${status.updatedReplicas ?? 0} of ${want} updated`;
}

const pages = {
  workloads: {
    kinds: ["workloads"],
    render: ([workloads]) =>
      table(
        "workloads",
        ["Namespace", "Name", "Ready", "Up to date", "Revision", "Rollout", "Module"],
        workloads.sort(byKey).map((w) => {
          const s = w.status ?? {};
          const want = s.desiredReplicas ?? w.spec.replicas ?? 1;
          const revision = (s.revisions ?? []).at(-1)?.revision ?? "";
          return {
            key: keyOf(w),
            cells: [w.metadata.namespace, w.metadata.name, `${s.readyReplicas ?? 0}/${want}`, s.updatedReplicas ?? 0, revision, rollout(w), w.spec.module],
          };
        }),
      ),
  },
  instances: {
    kinds: ["instances"],
    render: ([instances]) =>
      table(
        "instances",
        ["Namespace", "Name", "Owner", "Phase", "Node", "Restarts", "Logs"],
        instances.sort(byKey).map((i) => {
          const logs = element("a", "logs", {
            href: `#/logs/${encodeURIComponent(i.metadata.namespace)}/${encodeURIComponent(i.metadata.name)}`,
          });
          const owner = (i.metadata.ownerReferences ?? [])[0];
          const workload = i.spec.workload ?? (owner ? `${owner.kind}/${owner.name}` : "");
          const cells = [i.metadata.namespace, i.metadata.name, workload, i.status?.phase ?? "Pending", i.spec.node ?? "", i.status?.restarts ?? 0, logs];
          return { key: keyOf(i), cells };
        }),
      ),
  },
  events: {
    kinds: ["events"],
    render: ([events]) => {
      const when = (e) => e.spec.lastTimestamp ?? e.metadata.creationTimestamp ?? "";
      return table(
        "events",
        ["Last seen", "Namespace", "Object", "Type", "Reason", "Message", "Count"],
        events
          .sort((a, b) => when(b).localeCompare(when(a)))
          .map((e) => {
            const object = e.spec.involvedObject;
            const cells = [when(e), e.metadata.namespace, `${object.kind}/${object.name}`, e.spec.type, e.spec.reason, e.spec.message, e.spec.count];
            return { key: keyOf(e), cells };
          }),
      );
    },
  },
  nodes: {
    kinds: ["nodes", "instances"],
    adminOnly: true,
    render: ([nodes, instances]) => {
      const capacity = (c) => (c ? `${c.instances} instances, ${c.memory} memory, ${c.cpu} cpu` : "");
      const onNode = new Map();
      for (const i of instances) {
        const phase = i.status?.phase ?? "Pending";
        if (i.spec.node && phase !== "Succeeded" && phase !== "Failed") onNode.set(i.spec.node, (onNode.get(i.spec.node) ?? 0) + 1);
      }
      return table(
        "nodes",
        ["Name", "Ready", "Schedulable", "Instances", "Capacity", "Allocatable"],
        nodes.sort(byKey).map((n) => {
          const running = onNode.get(n.metadata.name) ?? 0;
          const ready = condition(n, "Ready")?.status ?? "Unknown";
          const schedulable = n.spec.draining ? "draining" : n.spec.unschedulable ? "cordoned" : "yes";
          const cells = [n.metadata.name, ready, schedulable, running, capacity(n.status?.capacity), capacity(n.status?.allocatable)];
          return { key: keyOf(n), cells };
        }),
      );
    },
  },
};

/** Shows `name`'s page, drawn again whenever one of its informers changes. */
function showPage(name) {
  const page = pages[name];
  const view = $("#page");
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.hash === `#/${name}`);
  if (page.adminOnly && state.who.role !== "admin") {
    closeInformers([]);
    view.replaceChildren(element("p", `The ${name} page is for the admin token; this one sees its namespaces only.`, { class: "notice" }));
    return;
  }
  closeInformers(page.kinds);
  const informers = page.kinds.map(informer);
  let pending = false;
  const draw = () => {
    pending = false;
    // A frame asked for before the page changed draws nothing.
    if (state.redraw?.schedule !== schedule) return;
    const errors = informers.flatMap((i) => [...i.errors.values()]);
    const heading = element("h2", name[0].toUpperCase() + name.slice(1));
    const drawn = [heading, page.render(informers.map((i) => i.items.map((entry) => entry.object)))];
    if (errors.length) drawn.push(element("p", errors.join("; "), { class: "error" }));
    view.replaceChildren(...drawn);
  };
  const schedule = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  };
  state.redraw = { informers, schedule };
  for (const i of informers) i.listeners.add(schedule);
  draw();
}

/** Shows and follows the log of instance `ns/name`. */
async function showLog(ns, name) {
  closeInformers([]);
  const pre = element("pre", "", { id: "log" });
  const status = element("p", "following…", { class: "notice" });
  $("#page").replaceChildren(element("h2", `Log of ${ns}/${name}`), status, pre);
  const stop = new AbortController();
  state.log = stop;
  try {
    const response = await api(`/api/v1/namespaces/${encodeURIComponent(ns)}/instances/${encodeURIComponent(name)}/log?follow=true`, stop.signal);
    await lines(response, (line) => {
      pre.append(`${line}\n`);
      if (pre.childNodes.length > LOG_LINES) pre.firstChild.remove();
    });
    status.textContent = "the log ended";
  } catch (error) {
    if (error.status === 401) return sessionEnded();
    if (!stop.signal.aborted) {
      status.textContent = error.message;
      status.className = "error";
    }
  }
}

function route() {
  state.log?.abort();
  state.log = null;
  if (state.redraw) for (const i of state.redraw.informers) i.listeners.delete(state.redraw.schedule);
  state.redraw = null;
  const [, page, ...rest] = location.hash.split("/");
  if (page === "logs" && rest.length === 2) showLog(...rest.map(decodeURIComponent));
  else showPage(page in pages ? page : "workloads");
}

async function logIn(token) {
  state.token = token;
  try {
    state.who = await (await api("/api/v1/whoami")).json();
    if (state.who.role === "node") throw new Error("That is a node's token: log in with the admin's or a tenant's.");
  } catch (error) {
    state.token = null;
    // Only a token refused is forgotten: a 503 during an election is not the token's fault.
    if (error.status === 401 || state.who?.role === "node") sessionStorage.removeItem(TOKEN_KEY);
    state.who = null;
    $("#login").hidden = false;
    $("#login-error").textContent = error.status === 401 ? "That token is not valid here." : error.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#login-error").textContent = "";
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").textContent =
    state.who.role === "admin" ? "admin" : `${state.who.name} (${(state.who.namespaces ?? []).join(", ")})`;
  window.removeEventListener("hashchange", route);
  window.addEventListener("hashchange", route);
  route();
}

function logOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "";
  location.reload();
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  logIn($("#token").value.trim());
});
$("#logout").addEventListener("click", logOut);
if (state.token) logIn(state.token);
else $("#login").hidden = false;
