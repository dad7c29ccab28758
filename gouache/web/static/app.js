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

// The report's summary (its text block), shown once and without a click: its figures are
// rounded where the report is made (one rule per kind of figure), and the picture beside it
// carries only the images and heatmaps.
function reportBlock(art) {
  const text = el("pre", { className: "summary" }, "loading report…");
  const block = el("div", { className: "report", dataset: { kind: "report" } }, text);
  fetch(art.url).then((r) => r.json()).then((data) => {
    text.textContent = data.summary || JSON.stringify(data, null, 2);
  }).catch(() => { text.textContent = "The report could not be loaded."; });
  return block;
}

function renderArtifacts(card, job) {
  const box = card.querySelector(".artifacts");
  if (box.dataset.filled) return;
  box.dataset.filled = "1";
  // The /diversity report first, in full: its picture (grid + heatmaps) and its summary.
  const order = { composite: 0, report: 1 };
  const arts = [...job.artifacts].sort((a, b) => (order[a.kind] ?? 2) - (order[b.kind] ?? 2));
  for (const art of arts) {
    if (art.kind === "report") {
      box.append(reportBlock(art));
    } else if (art.kind === "composite" && !art.hidden) {
      // At its own size, where its 13 px labels read; a narrow screen scrolls it sideways.
      box.append(el("figure", { className: "wide composite" },
        el("img", { src: art.url, alt: "diversity report: images and distance heatmaps",
          className: "composite", dataset: { kind: "composite", name: art.name } }),
        el("figcaption", {}, art.label || "diversity report picture")));
    } else if (art.mime.startsWith("image/") && art.hidden) {
      // Flagged by the content filter: blurred until clicked (the rule: bot/moderation.screen).
      const img = el("img", { src: art.url, alt: `flagged ${art.kind} ${art.name} (click to show)`,
        className: "spoiler", title: "Flagged by the content filter: click to show",
        dataset: { kind: art.kind, name: art.name, hidden: "1" } });
      img.addEventListener("click", () => img.classList.remove("spoiler"), { once: true });
      box.append(img);
    } else if (art.mime.startsWith("image/")) {
      const link = el("a", { href: art.url, target: "_blank", rel: "noopener" },
        el("img", { src: art.url, alt: art.label || `${art.kind} ${art.name}`,
          className: art.wide ? "wide" : "", dataset: { kind: art.kind, name: art.name } }));
      // Every tile says what it is ("image 2", "GIF 2", "cell 3: cfg=7", the sweep grid, the
      // strips); GIFs are marked, and wide pictures keep their own size and scroll sideways.
      const caption = art.label || art.name;
      box.append(el("figure", { className: [art.wide ? "wide" : "", art.kind === "gif" ? "gif" : ""].join(" ").trim() },
        link, el("figcaption", {}, caption)));
    }
  }
  const buttons = card.querySelector(".buttons");
  for (const action of job.actions || []) {
    const label = actionLabel(action);
    buttons.append(el("button", {
      type: "button", dataset: { action },
      onclick: () => submit(api(`/api/jobs/${job.id}/actions/${action}`, { method: "POST" }), label),
    }, label));
    // Beside each image's U: remix that image with a new command, no re-upload (a prompt, or
    // "upscale", "edit ..."): the command box's text, or asked for when the box is empty.
    const [name, index] = action.split(".");
    if (name === "upscale" && index !== undefined) {
      const remixLabel = `Remix ${Number(index) + 1}`;
      buttons.append(el("button", {
        type: "button", dataset: { action: `remix.${index}` },
        onclick: () => remix(job, index, remixLabel),
      }, remixLabel));
    }
  }
}

function remix(job, index, label) {
  const text = input.value.trim() || (window.prompt(`${label}: a prompt and flags (or "upscale")`, "") || "").trim();
  if (!text) return;
  input.value = "";
  submit(api(`/api/jobs/${job.id}/remix/${index}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ command: text }),
  }), `${label}: ${text}`);
}

// A button's label: the job's own actions by name; per-image ones ("upscale.0") as U1, V1 subtle...
function actionLabel(action) {
  const labels = { reroll: "Reroll", variations: "Variations", gif: "Make GIF", diversify: "Diversify" };
  const [name, index] = action.split(".");
  if (index === undefined) return labels[name] || name;
  const n = Number(index) + 1;
  const perImage = { upscale: `U${n}`, "vary-subtle": `V${n} subtle`, "vary-strong": `V${n} strong` };
  return perImage[name] || action;
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

// "/help [model]" and "/loras [model]" answer with text (GET /api/help, /api/loras), not a job.
const LISTING = /^\/(help|loras)(?:\s+(?:--model\s+)?(\S+))?$/i;

async function showListing(name, model, echo) {
  post(echo, "user");
  const query = model ? `?model=${encodeURIComponent(model)}` : "";
  try {
    const data = await api(`/api/${name.toLowerCase()}${query}`);
    post(data.text.replaceAll("**", "").replaceAll("`", ""), "listing");
  } catch (error) {
    post(error.message, "error");
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  const listing = fileInput.files.length ? null : text.match(LISTING);
  if (listing) {
    input.value = "";
    showListing(listing[1], listing[2], text);
    return;
  }
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
