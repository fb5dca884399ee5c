// qhybrid dashboard: the API's own client, plain JavaScript and hand-written SVG.
// Every request goes to this origin (the page's Content Security Policy allows nothing else) and
// carries the key typed in the header, kept in this tab's sessionStorage only.
"use strict";

const KEY_STORAGE = "qhybrid.apiKey";
const LIST_REFRESH_MS = 2000;
const ACTIVE = ["accepted", "preparing", "submitting", "submitted", "remote_queued", "remote_running", "finalizing"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const FILTERS = [
  { name: "All", statuses: [] },
  { name: "Active", statuses: ACTIVE },
  { name: "Completed", statuses: ["completed"] },
  { name: "Failed", statuses: ["failed"] },
  { name: "Cancelled", statuses: ["cancelled"] },
];
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  filter: 0,
  listTimer: null,
  stream: null, // AbortController of the open event stream
  generation: 0, // bumps on every navigation: late answers of a previous view are dropped
};

class AuthError extends Error {}

// ------------------------------------------------------------------------------------ HTTP

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (state.key) h.Authorization = `Bearer ${state.key}`;
  return h;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ headers: headers(), cache: "no-store" }, options || {}));
  if (response.status === 401) {
    askForKey("This API needs a key: type it above.");
    throw new AuthError("unauthorized");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).message || message;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new Error(message);
  }
  return response.json();
}

// Server-sent events over fetch: EventSource cannot send an Authorization header.
async function streamEvents(path, onMessage, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 50 && !signal.aborted; attempt++) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
      if (response.status === 401) {
        askForKey("This API needs a key: type it above.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue; // heartbeat
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") message.event = text;
            else if (field === "data") message.data += text;
            else if (field === "id") message.id = text;
          }
          if (message.id !== null) lastId = message.id;
          if (message.data) {
            const done = onMessage(message.event, JSON.parse(message.data));
            if (done) return;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    // The connection dropped: resume after the last event seen.
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// --------------------------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function badge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status, text: status.replace("_", " ") });
}

function shortId(id) {
  return id.slice(0, 8);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function seconds(a, b) {
  const s = (new Date(b) - new Date(a)) / 1000;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return `${(s / 60).toFixed(1)} min`;
}

function num(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const d = digits === undefined ? 4 : digits;
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(d - 1);
  return x.toFixed(d);
}

function duration(s) {
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

function pct(x, digits) {
  return `${(x * 100).toFixed(digits === undefined ? 2 : digits)}%`;
}

function money(x, currency) {
  if (x === null || x === undefined) return "–";
  return `${x.toFixed(2)} ${currency || "USD"}`;
}

// "Nice" axis ticks between lo and hi.
function ticks(lo, hi, count) {
  if (hi <= lo) hi = lo + 1e-12;
  const raw = (hi - lo) / Math.max(1, count);
  const step = Math.pow(10, Math.floor(Math.log10(raw)));
  const mult = [1, 2, 2.5, 5, 10].find((m) => raw <= m * step) || 10;
  const s = mult * step;
  const out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + s * 1e-9; v += s) out.push(Number(v.toPrecision(12)));
  return out;
}

function setNotice(text, kind) {
  const box = document.getElementById("notice");
  if (!text) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.className = `notice ${kind || ""}`;
  box.textContent = text;
}

function askForKey(text) {
  const input = document.getElementById("api-key");
  input.classList.add("needed");
  input.focus();
  setNotice(text, "");
}

function stopLive() {
  if (state.listTimer) clearTimeout(state.listTimer);
  state.listTimer = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
}

// ------------------------------------------------------------------------------- jobs list

function renderList() {
  const view = document.getElementById("view");
  const generation = state.generation;
  const chips = FILTERS.map((f, i) =>
    el("button", { class: "chip", type: "button", "aria-pressed": String(i === state.filter), "data-filter": f.name, text: f.name }),
  );
  chips.forEach((chip, i) =>
    chip.addEventListener("click", () => {
      state.filter = i;
      chips.forEach((c, j) => c.setAttribute("aria-pressed", String(j === i)));
      refresh();
    }),
  );
  const liveDot = el("span", { class: "dot" });
  const liveText = el("span", { text: "live" });
  const tbody = el("tbody", { id: "jobs-body" });
  view.replaceChildren(
    el("h1", { text: "Jobs" }),
    el("div", { class: "toolbar" }, chips, el("span", { class: "live" }, liveDot, liveText)),
    el(
      "table",
      { class: "jobs", id: "jobs-table" },
      el(
        "thead",
        {},
        el("tr", {}, ["Job", "Status", "Backend", "Created", "Finished", "Objective", "Selected"].map((h) => el("th", { text: h }))),
      ),
      tbody,
    ),
  );

  async function refresh() {
    if (state.listTimer) clearTimeout(state.listTimer);
    const params = new URLSearchParams({ limit: "50" });
    for (const s of FILTERS[state.filter].statuses) params.append("status", s);
    try {
      const page = await api(`/jobs?${params}`);
      if (generation !== state.generation) return;
      setNotice("");
      liveDot.className = "dot";
      liveText.textContent = `live · updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
      tbody.replaceChildren(
        ...(page.items.length
          ? page.items.map((job) =>
              el(
                "tr",
                { "data-job": job.job_id },
                el("td", {}, el("a", { href: `#/jobs/${job.job_id}`, class: "mono", text: shortId(job.job_id) })),
                el("td", {}, badge(job.status)),
                el("td", { text: job.backend }),
                el("td", { text: when(job.created_at) }),
                el("td", { text: when(job.finished_at) }),
                el("td", { class: "mono", text: job.objective === null ? "–" : num(job.objective, 5) }),
                el("td", { text: (job.selected || []).join(", ") || "–" }),
              ),
            )
          : [el("tr", {}, el("td", { colspan: "7", class: "empty", text: "No jobs with this status." }))]),
      );
    } catch (error) {
      liveDot.className = "dot off";
      liveText.textContent = "not updating";
      if (!(error instanceof AuthError)) setNotice(`Could not list jobs: ${error.message}`, "error");
    }
    if (generation === state.generation) state.listTimer = setTimeout(refresh, LIST_REFRESH_MS);
  }
  refresh();
}

// --------------------------------------------------------------------------------- job page

function renderJob(jobId) {
  const view = document.getElementById("view");
  const generation = state.generation;
  view.replaceChildren(el("p", { class: "waiting", text: "Loading the job…" }));
  let frontierShown = null; // "pending" or "final"

  async function load() {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (generation !== state.generation) return null;
    drawJob(view, job);
    const final = TERMINAL.has(job.status);
    if (frontierShown !== "final" && (frontierShown === null || final)) {
      frontierShown = final ? "final" : "pending";
      api(`/jobs/${encodeURIComponent(jobId)}/frontier`)
        .then((frontier) => {
          if (generation === state.generation) drawFrontier(document.getElementById("frontier-card"), frontier);
        })
        .catch((error) => {
          const card = document.getElementById("frontier-card");
          if (card && !(error instanceof AuthError)) card.append(el("p", { class: "muted", text: `No frontier: ${error.message}` }));
        });
    }
    return job;
  }

  load()
    .then((job) => {
      if (!job || TERMINAL.has(job.status)) return;
      const controller = new AbortController();
      state.stream = controller;
      streamEvents(
        `/jobs/${encodeURIComponent(jobId)}/events`,
        (event) => {
          if (generation !== state.generation) return true;
          // Every transition changes the document: read it again (a few KB) and redraw.
          load().catch(() => {});
          return event === "end";
        },
        controller.signal,
      );
    })
    .catch((error) => {
      if (error instanceof AuthError) {
        view.replaceChildren(el("p", { class: "waiting", text: "Waiting for an API key." }));
        return;
      }
      view.replaceChildren(el("p", { class: "notice error", text: `Could not load job ${jobId}: ${error.message}` }));
    });
}

function drawJob(view, job) {
  const result = job.result;
  const quantum = result ? result.quantum : null;
  const head = el(
    "div",
    { class: "job-head" },
    el("h1", {}, "Job ", el("span", { class: "mono", text: job.job_id })),
    badge(job.status),
    result ? el("span", { class: `badge ${result.source === "classical_fallback" ? "fallback" : "source"}`, text: result.source }) : null,
    el("span", { class: "meta", text: `${job.backend} · ${job.shots} shots · created ${when(job.created_at)}` }),
  );
  const frontierCard = document.getElementById("frontier-card");
  const keepFrontier = frontierCard && frontierCard.dataset.job === job.job_id ? frontierCard : null;
  view.replaceChildren(
    head,
    el(
      "div",
      { class: "grid" },
      summaryCard(job),
      timelineCard(job),
      samplesCard(job),
      keepFrontier || el("section", { class: "card span-5", id: "frontier-card", "data-job": job.job_id }, el("h2", {}, "Efficient frontier", el("span", { class: "sub", text: "of the request's universe, computed in the trusted zone" })), el("p", { class: "waiting", text: "Computing…" })),
      objectiveCard(job),
      privacyCard(job, quantum),
    ),
  );
}

function summaryCard(job) {
  const r = job.result;
  const stats = [];
  if (r) {
    stats.push(stat("Objective", num(r.objective, 6), "lower is better"));
    stats.push(stat("Gap to classical", pct(r.gap, 3), r.found_by));
    stats.push(stat("Expected return", num(r.expected_return, 5), "wᵀμ"));
    stats.push(stat("Variance", num(r.variance, 5), "wᵀΣw"));
  }
  const body = [el("h2", { text: "Answer" })];
  if (r) {
    body.push(el("div", { class: "stat-row" }, stats));
    if (r.fallback) body.push(el("p", { class: "notice", text: `Classical fallback: ${r.fallback.reason}` }));
    const q = r.quantum;
    const facts = [];
    const fact = (k, v) => facts.push(el("dt", { text: k }), el("dd", { text: v }));
    fact("Holds", (r.selected || []).join(", "));
    fact("Source", `${r.source}, found by ${r.found_by}`);
    fact("Classical baseline", `${r.classical.method}${r.classical.optimal ? " (proven optimal)" : ""} in ${duration(r.classical.seconds)}`);
    if (q) {
      fact("Shots on the circuit's best", pct(q.best_share, 1));
      if (q.optimum_share !== null && q.optimum_share !== undefined) fact("Shots on the optimum", pct(q.optimum_share, 1));
      if (q.samples) fact("Distinct outcomes", `${q.samples.distinct} of ${q.shots} shots, ${pct(q.samples.feasible_share, 1)} feasible`);
    }
    body.push(
      el(
        "div",
        { class: "answer-grid" },
        el("div", {}, el("h2", {}, "Allocation", el("span", { class: "sub", text: "share of the portfolio" })), allocationChart(r)),
        el("dl", { class: "kv" }, facts),
      ),
    );
  } else if (job.error) {
    body.push(el("p", { class: "notice error", text: job.error }));
  } else {
    body.push(el("p", { class: "waiting", text: `The job is ${job.status.replace("_", " ")}; the answer appears here when it completes.` }));
  }
  if (job.last_error) body.push(el("p", { class: "muted", text: `Retrying after: ${job.last_error}` }));
  return el("section", { class: "card span-8", id: "summary-card" }, body);
}

function stat(label, value, note) {
  return el("div", { class: "stat" }, el("div", { class: "label", text: label }), el("div", { class: "big", text: value }), note ? el("div", { class: "muted", text: note }) : null);
}

function timelineCard(job) {
  const items = job.events.map((event, i) => {
    const previous = i > 0 ? job.events[i - 1] : null;
    const cls = event.status === "failed" ? "failed" : TERMINAL.has(event.status) ? "terminal" : "";
    return el(
      "li",
      { class: cls, "data-event-id": event.id, "data-status": event.status },
      badge(event.status),
      el("span", { class: "when", text: `${clock(event.at)}${previous ? ` · +${seconds(previous.at, event.at)}` : ""}` }),
      event.detail ? el("div", { class: "detail", text: event.detail }) : null,
    );
  });
  const task = job.remote_task;
  const taskFacts = task
    ? el(
        "dl",
        { class: "kv", id: "provider-task" },
        el("dt", { text: "Provider task" }),
        el("dd", { class: "mono", text: task.task_id || "(submitting)" }),
        el("dt", { text: "Attempt" }),
        el("dd", { text: String(task.attempt) }),
        el("dt", { text: "Provider state" }),
        el("dd", { text: `${task.state || "–"}${task.provider_state ? ` (${task.provider_state})` : ""}${task.queue_position !== null && task.queue_position !== undefined ? ` · queue position ${task.queue_position}` : ""}` }),
        el("dt", { text: "Polls" }),
        el("dd", { text: String(task.polls) }),
      )
    : el("p", { class: "muted", text: "No provider task yet." });
  return el(
    "section",
    { class: "card span-4", id: "timeline-card" },
    el("h2", {}, "Timeline", el("span", { class: "sub", text: `${job.events.length} transitions` })),
    el("ol", { class: "timeline", id: "timeline" }, items),
    el("h2", { class: "task-title", text: "Provider task" }),
    taskFacts,
  );
}

// Allocation: each held asset's share (selection: equal shares; weights: lots).
function allocationChart(r) {
  let rows;
  if (r.weights) {
    rows = Object.entries(r.weights)
      .filter(([, w]) => w > 0)
      .map(([name, w]) => ({ name, share: w, note: r.lots ? `${r.lots[name]} lot${r.lots[name] === 1 ? "" : "s"}` : pct(w, 1) }));
  } else {
    rows = r.selected.map((name) => ({ name, share: 1 / r.selected.length, note: pct(1 / r.selected.length, 1) }));
  }
  rows.sort((a, b) => b.share - a.share || a.name.localeCompare(b.name));
  const width = 360;
  const rowH = 24;
  const left = 58;
  const right = 62;
  const height = rows.length * rowH + 10;
  const max = Math.max(...rows.map((row) => row.share));
  const chart = svg("svg", {
    class: "chart",
    id: "allocation-chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "Allocation",
    "data-assets": rows.map((row) => row.name).join(","),
  });
  rows.forEach((row, i) => {
    const y = 5 + i * rowH;
    const w = ((width - left - right) * row.share) / max;
    chart.append(
      svg("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end", text: row.name }),
      svg("rect", { class: "bar", x: left, y: y + 4, width: Math.max(1, w), height: rowH - 8, rx: 3, "data-asset": row.name, "data-share": row.share.toFixed(6) }),
      svg("text", { x: left + w + 6, y: y + rowH / 2 + 4, class: "label-muted", text: row.note }),
    );
  });
  return chart;
}

// The most frequent de-obfuscated outcomes, the optimum marked.
function samplesCard(job) {
  const card = el(
    "section",
    { class: "card span-7", id: "samples-card" },
    el("h2", {}, "Most frequent samples", el("span", { class: "sub", text: "de-obfuscated in the trusted zone, judged on the true problem" })),
  );
  const quantum = job.result ? job.result.quantum : null;
  const top = quantum && quantum.top_samples;
  if (!top || !top.length) {
    let text = "Once completed.";
    if (job.result) text = job.result.source === "classical_fallback" ? "No samples: the QPU did not answer." : "This result lists no samples.";
    card.append(el("p", { class: job.result ? "muted" : "waiting", text }));
    return card;
  }
  const answerBits = job.result.bits.join("");
  const width = 760;
  const rowH = 24;
  const left = 290;
  const right = 185;
  const height = top.length * rowH + 28;
  const max = Math.max(...top.map((s) => s.count));
  const chart = svg("svg", {
    class: "chart",
    id: "samples-chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "Sample histogram",
    "data-shots": String(quantum.shots),
    "data-counts": top.map((s) => s.count).join(","),
  });
  top.forEach((sample, i) => {
    const y = 4 + i * rowH;
    const w = ((width - left - right) * sample.count) / max;
    const isAnswer = sample.bits.join("") === answerBits;
    const cls = sample.optimum ? "bar optimum" : sample.feasible ? "bar" : "bar infeasible";
    const label = sample.lots
      ? Object.entries(sample.lots).filter(([, n]) => n > 0).map(([a, n]) => `${a}×${n}`).join(" ")
      : sample.selected.join(" · ") || "(none)";
    chart.append(
      svg("text", { x: left - 8, y: y + rowH / 2 + 4, "text-anchor": "end", text: label.length > 46 ? `${label.slice(0, 45)}…` : label }),
      svg("rect", {
        class: cls,
        x: left,
        y: y + 3,
        width: Math.max(1, w),
        height: rowH - 6,
        rx: 3,
        "data-count": String(sample.count),
        "data-selected": sample.selected.join(","),
        "data-optimum": String(sample.optimum),
        "data-feasible": String(sample.feasible),
      }),
      svg("text", {
        x: left + w + 6,
        y: y + rowH / 2 + 4,
        class: "label-muted",
        text: `${sample.count} (${pct(sample.count / quantum.shots, 1)})${sample.optimum ? " ★ optimum" : ""}${isAnswer && !sample.optimum ? " ◆ answer" : ""}`,
      }),
      svg("title", { text: `${label}: ${sample.count} shots, true objective ${num(sample.objective, 6)}${sample.feasible ? "" : " (breaks the budget)"}` }),
    );
  });
  chart.append(svg("text", { x: left, y: height - 6, class: "label-muted", text: `shots per outcome, of ${quantum.shots}` }));
  card.append(
    chart,
    el(
      "div",
      { class: "legend" },
      el("span", {}, el("i", { class: "l-gold" }), "the classical baseline's best (optimum)"),
      el("span", {}, el("i", { class: "l-blue" }), "feasible"),
      el("span", {}, el("i", { class: "l-grey" }), "breaks the budget"),
    ),
  );
  return card;
}

// Objective of the answer against the classical baselines and, when present, the samplers.
function objectiveCard(job) {
  const card = el("section", { class: "card span-7", id: "objective-card" }, el("h2", {}, "Objective against the baselines", el("span", { class: "sub", text: "true objective, lower is better" })));
  const r = job.result;
  if (!r) {
    card.append(el("p", { class: "waiting", text: "Once completed." }));
    return card;
  }
  const rows = [{ label: "Answer", value: r.objective, cls: "dot-answer" }];
  if (r.quantum_best) rows.push({ label: "Circuit's best sample", value: r.quantum_best.objective, cls: "dot-quantum" });
  if (r.refined) rows.push({ label: "After refinement", value: r.refined.objective, cls: "dot-quantum" });
  rows.push({ label: `Exact (${r.baselines.exact.method})`, value: r.baselines.exact.objective, cls: "dot-classical" });
  rows.push({ label: "Simulated annealing", value: r.baselines.simulated_annealing.objective, cls: "dot-classical" });
  const contribution = r.quantum && r.quantum.contribution;
  if (contribution) {
    for (const [key, label] of [["circuit", "Circuit samples (best)"], ["start_state", "Start state only (best)"], ["rounding", "Randomised rounding (best)"], ["annealing", "Swap annealer (best)"]]) {
      const s = contribution[key];
      if (s && s.best_objective !== null) rows.push({ label, value: s.best_objective, cls: key === "circuit" ? "dot-quantum" : "dot-sampler" });
    }
  }
  const values = rows.map((row) => row.value);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.01 || 1e-6;
  lo -= pad;
  hi += pad;
  const width = 700;
  const left = 190;
  const right = 110;
  const rowH = 24;
  const top = 8;
  const height = top + rows.length * rowH + 30;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
  const chart = svg("svg", { class: "chart", id: "objective-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Objectives" });
  const axisY = top + rows.length * rowH + 4;
  const steps = ticks(lo, hi, 4);
  const digits = steps.length > 1 ? Math.min(10, Math.max(2, 1 - Math.floor(Math.log10(steps[1] - steps[0])))) : 4;
  for (const t of steps) {
    chart.append(
      svg("line", { class: "grid-line", x1: x(t), x2: x(t), y1: top, y2: axisY }),
      svg("text", { class: "tick", x: x(t), y: axisY + 14, "text-anchor": "middle", text: t.toFixed(digits) }),
    );
  }
  rows.forEach((row, i) => {
    const y = top + i * rowH + rowH / 2;
    chart.append(
      svg("text", { x: left - 10, y: y + 4, "text-anchor": "end", text: row.label }),
      svg("line", { class: "grid-line", x1: left, x2: width - right, y1: y, y2: y }),
      svg("circle", { class: row.cls, cx: x(row.value), cy: y, r: 6, "data-label": row.label, "data-objective": String(row.value) }),
      svg("text", { class: "label-muted mono-svg", x: width - right + 10, y: y + 4, text: num(row.value, 7) }),
    );
  });
  card.append(chart);
  const stats = el("p", { class: "muted" }, `Gap to the classical baseline: ${pct(r.gap, 4)} (${num(r.gap_abs, 6)}); found by ${r.found_by}.`);
  card.append(stats);
  if (contribution) {
    card.append(el("div", { class: `verdict ${contribution.circuit_helped ? "helped" : ""}`, id: "contribution-verdict", text: contribution.verdict }));
  }
  return card;
}

function drawFrontier(card, frontier) {
  if (!card) return;
  const width = 560;
  const height = 380;
  const m = { left: 78, right: 30, top: 14, bottom: 46 };
  const xs = frontier.points.map((p) => p.volatility).concat(frontier.assets.map((a) => a.volatility));
  const ys = frontier.points.map((p) => p.expected_return).concat(frontier.assets.map((a) => a.expected_return));
  if (frontier.chosen) {
    xs.push(frontier.chosen.volatility);
    ys.push(frontier.chosen.expected_return);
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const px = (x1 - x0) * 0.06 || 1e-4;
  const py = (y1 - y0) * 0.08 || 1e-4;
  x0 = Math.max(0, x0 - px);
  x1 += px;
  y0 -= py;
  y1 += py;
  const X = (v) => m.left + ((v - x0) / (x1 - x0)) * (width - m.left - m.right);
  const Y = (v) => height - m.bottom - ((v - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  const chart = svg("svg", {
    class: "chart",
    id: "frontier-chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "Efficient frontier",
    "data-points": String(frontier.points.length),
    "data-assets": frontier.assets.map((a) => a.name).join(","),
  });
  for (const t of ticks(x0, x1, 6)) {
    chart.append(
      svg("line", { class: "grid-line", x1: X(t), x2: X(t), y1: m.top, y2: height - m.bottom }),
      svg("text", { class: "tick", x: X(t), y: height - m.bottom + 16, "text-anchor": "middle", text: pct(t, 2) }),
    );
  }
  for (const t of ticks(y0, y1, 6)) {
    chart.append(
      svg("line", { class: "grid-line", x1: m.left, x2: width - m.right, y1: Y(t), y2: Y(t) }),
      svg("text", { class: "tick", x: m.left - 8, y: Y(t) + 4, "text-anchor": "end", text: pct(t, 3) }),
    );
  }
  chart.append(
    svg("text", { class: "label-muted", x: (m.left + width - m.right) / 2, y: height - 8, "text-anchor": "middle", text: "volatility per period (√ wᵀΣw)" }),
    svg("text", { class: "label-muted", x: 14, y: (m.top + height - m.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(m.top + height - m.bottom) / 2})`, text: "expected return per period (wᵀμ)" }),
    svg("polyline", { class: "frontier-line", points: frontier.points.map((p) => `${X(p.volatility).toFixed(1)},${Y(p.expected_return).toFixed(1)}`).join(" ") }),
  );
  // Names only for small universes: hundreds of labels would hide the frontier.
  const named = frontier.assets.length <= 30;
  for (const asset of frontier.assets) {
    chart.append(
      svg("circle", { class: "asset-dot", cx: X(asset.volatility), cy: Y(asset.expected_return), r: named ? 4 : 2.5, "data-asset": asset.name }, svg("title", { text: asset.name })),
      named ? svg("text", { class: "label-muted", x: X(asset.volatility) + 6, y: Y(asset.expected_return) - 5, text: asset.name }) : null,
    );
  }
  if (frontier.chosen) {
    const cx = X(frontier.chosen.volatility);
    const cy = Y(frontier.chosen.expected_return);
    const r = 8;
    chart.append(
      svg("path", {
        class: "chosen",
        id: "frontier-chosen",
        d: `M ${cx} ${cy - r} L ${cx + r} ${cy} L ${cx} ${cy + r} L ${cx - r} ${cy} Z`,
        "data-selected": frontier.chosen.selected.join(","),
        "data-volatility": String(frontier.chosen.volatility),
        "data-return": String(frontier.chosen.expected_return),
      }),
      svg("text", { x: cx + 11, y: cy + 4, text: "chosen portfolio" }),
    );
  }
  const legend = el(
    "div",
    { class: "legend" },
    el("span", {}, el("i", { class: "l-blue" }), `long-only frontier (${frontier.points.length} points)`),
    el("span", {}, el("i", { class: "l-grey" }), "single assets"),
    frontier.chosen ? el("span", {}, el("i", { class: "l-gold" }), "the job's answer, equal shares") : null,
  );
  card.replaceChildren(card.firstChild, chart, legend);
}

function privacyCard(job, quantum) {
  const r = job.result;
  const link = quantum ? quantum.link : null;
  const privacy = quantum ? quantum.privacy : null;
  const cost = job.cost || {};
  const rows = [];
  const add = (k, v, attrs) => rows.push(el("dt", { text: k }), el("dd", attrs || {}, v));
  add("Privacy level", privacy ? privacy.level : "–", { id: "privacy-level" });
  if (privacy && quantum.qubits !== null) add("Qubits sent", `${privacy.qubits_sent} (${privacy.qubits_sent - quantum.qubits} decoys)`);
  if (link) {
    add("Link", `${link.transport}${link.tls_version ? ` · ${link.tls_version}` : ""}`, { id: "link-transport" });
    add("Key exchange", `${link.tls_group || "–"}${link.post_quantum ? " (hybrid post-quantum)" : ""}`, { id: "link-group" });
    if (link.tls_cipher) add("Cipher", link.tls_cipher);
  } else {
    add("Link", r ? "no QPU task answered" : "once the task ran");
  }
  if (quantum && quantum.circuit) add("Circuit", `${quantum.circuit.logical_qubits} qubits · depth ${quantum.circuit.depth} · ${quantum.circuit.two_qubit_gates} two-qubit gates`);
  if (quantum && quantum.device) add("Device", quantum.device);
  add("Estimated cost", money(cost.estimated, cost.currency), { id: "cost-estimated" });
  add("Actual cost", money(cost.actual, cost.currency), { id: "cost-actual" });
  if (r && r.estimate) add("μ, Σ estimated", `${r.estimate.estimator} on ${r.estimate.observations} ${r.estimate.returns} returns`);
  return el("section", { class: "card span-5", id: "privacy-card" }, el("h2", { text: "Privacy, link and cost" }), el("dl", { class: "kv" }, rows));
}

// ----------------------------------------------------------------------------------- router

function route() {
  stopLive();
  state.generation += 1;
  const match = location.hash.match(/^#\/jobs\/([A-Za-z0-9-]{1,64})$/);
  if (match) renderJob(match[1]);
  else renderList();
}

function setup() {
  const input = document.getElementById("api-key");
  input.value = state.key;
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = input.value.trim();
    if (state.key) sessionStorage.setItem(KEY_STORAGE, state.key);
    else sessionStorage.removeItem(KEY_STORAGE);
    input.classList.remove("needed");
    setNotice("");
    route();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    state.key = "";
    input.value = "";
    sessionStorage.removeItem(KEY_STORAGE);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", setup);
