// gouache playground: a chat channel in one page. No build step, no framework.
// Every user-supplied string goes through textContent, never innerHTML.
"use strict";

const channel = document.getElementById("channel");
const recent = document.getElementById("recent");
const form = document.getElementById("composer");
const input = document.getElementById("command");
const fileInput = document.getElementById("file");
const fileName = document.getElementById("file-name");
fileInput.addEventListener("change", () => {
  fileName.textContent = fileInput.files.length ? fileInput.files[0].name : "Attach…";
});

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function post(text, cls = "") {
  const msg = el("div", { className: `msg ${cls}`.trim() }, text);
  channel.append(msg);
  channel.scrollTop = channel.scrollHeight;
  return msg;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = {};
  try { body = await response.json(); } catch (_) { /* empty or not JSON */ }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function statusText(job) {
  if (job.status === "queued") {
    return job.position ? (job.position <= 1 ? "Queued: next in line." : `Queued: #${job.position} in line.`) : "Queued.";
  }
  if (job.status === "running") return `Generating… ${Math.round(job.progress * 100)}%`;
  if (job.status === "succeeded") return "Done.";
  if (job.status === "cancelled") return job.error || "Cancelled.";
  return job.error || `Job ${job.status}.`;
}

function renderJob(card, job) {
  card.dataset.status = job.status;
  card.querySelector(".status").textContent = statusText(job);
  const bar = card.querySelector("progress");
  bar.hidden = job.status !== "running";
  bar.value = job.progress;
  if (!["failed", "dead", "cancelled"].includes(job.status)) card.classList.remove("error");
  else card.classList.add("error");
  card.querySelector(".cancel").hidden = !["queued", "running"].includes(job.status);
  if (job.artifacts && job.status === "succeeded") renderArtifacts(card, job);
}

function renderArtifacts(card, job) {
  const box = card.querySelector(".artifacts");
  if (box.dataset.filled) return;
  box.dataset.filled = "1";
  for (const art of job.artifacts) {
    if (art.kind === "report") {
      const pre = el("pre", { dataset: { kind: "report" } }, "loading report…");
      fetch(art.url).then((r) => r.text()).then((text) => { pre.textContent = text; });
      box.append(el("details", {}, el("summary", {}, "Report"), pre));
    } else if (art.mime.startsWith("image/") && art.hidden) {
      // Flagged by the content filter: blurred until clicked (the rule: bot/moderation.screen).
      const img = el("img", { src: art.url, alt: `flagged ${art.kind} ${art.name} (click to show)`,
        className: "spoiler", title: "Flagged by the content filter: click to show",
        dataset: { kind: art.kind, name: art.name, hidden: "1" } });
      img.addEventListener("click", () => img.classList.remove("spoiler"), { once: true });
      box.append(img);
    } else if (art.mime.startsWith("image/")) {
      box.append(el("a", { href: art.url, target: "_blank", rel: "noopener" },
        el("img", { src: art.url, alt: `${art.kind} ${art.name}`, dataset: { kind: art.kind, name: art.name } })));
    }
  }
  const buttons = card.querySelector(".buttons");
  const labels = { reroll: "Reroll", gif: "Make GIF", diversify: "Diversify" };
  for (const action of job.actions || []) {
    buttons.append(el("button", {
      type: "button", dataset: { action },
      onclick: () => submit(api(`/api/jobs/${job.id}/actions/${action}`, { method: "POST" }), labels[action]),
    }, labels[action]));
  }
}

function jobCard(job) {
  const card = el("div", { className: "msg job", dataset: { jobId: job.id } },
    el("div", { className: "command" }, job.command || ""),
    el("span", { className: "status" }, ""), " ",
    el("progress", { max: 1, value: 0, hidden: true }), " ",
    el("button", { type: "button", className: "cancel", hidden: true,
      onclick: () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).catch((e) => post(e.message, "error")) }, "Cancel"),
    el("div", { className: "artifacts" }),
    el("div", { className: "buttons" }));
  for (const note of job.notes || []) card.append(el("div", { className: "status" }, `Note: ${note}`));
  channel.append(card);
  channel.scrollTop = channel.scrollHeight;
  return card;
}

function follow(card, id) {
  const finish = (job) => { renderJob(card, job); loadRecent(); channel.scrollTop = channel.scrollHeight; };
  if (!window.EventSource) return poll(card, id, finish);
  const events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener("status", (e) => renderJob(card, JSON.parse(e.data)));
  events.addEventListener("done", (e) => { events.close(); finish(JSON.parse(e.data)); });
  events.onerror = () => { events.close(); if (!["succeeded", "failed", "dead", "cancelled"].includes(card.dataset.status)) poll(card, id, finish); };
}

async function poll(card, id, finish) {
  for (;;) {
    const job = await api(`/api/jobs/${id}`).catch(() => null);
    if (job && ["succeeded", "failed", "dead", "cancelled"].includes(job.status)) return finish(job);
    if (job) renderJob(card, job);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function submit(promise, echo) {
  if (echo) post(echo, "user");
  try {
    const created = await promise;
    const job = await api(`/api/jobs/${created.id}`);
    const card = jobCard(job);
    renderJob(card, job);
    follow(card, job.id);
    loadRecent();
  } catch (error) {
    post(error.message, "error");
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  let options;
  if (fileInput.files.length) {
    const body = new FormData();
    body.append("command", text);
    body.append("file", fileInput.files[0]);
    options = { method: "POST", body };
  } else {
    options = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ command: text }) };
  }
  input.value = "";
  fileInput.value = "";
  fileName.textContent = "Attach…";
  submit(api("/api/jobs", options), text);
});

async function loadRecent() {
  const data = await api("/api/jobs").catch(() => ({ jobs: [] }));
  recent.replaceChildren(...data.jobs.map((job) => el("li", {
    dataset: { jobId: job.id, status: job.status }, title: job.command,
    onclick: async () => { const full = await api(`/api/jobs/${job.id}`); const card = jobCard(full); renderJob(card, full); follow(card, job.id); },
  }, `${job.status}: ${job.command.split(" --")[0]}`)));
}

loadRecent();
