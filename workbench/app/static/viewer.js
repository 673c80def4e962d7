// The app's renderer: runs as the body of Gradio's js_on_load(element, trigger, props, server, upload, watch).
// The server sends each frame's new steps as compact data (workbench/app/session.py); this keeps the run and
// draws every view from it: the streamed text, the token strip, attention (one head or the mean, and all heads of
// a layer), top candidates, the sampling pipeline and the logit lens. One selected step drives them all.
const root = element.querySelector(".wb-root");
// The server sends each value as one JSON string (cheaper for Gradio to diff than nested objects).
const parse = (v) => (typeof v === "string" ? JSON.parse(v) : v);
const page = parse(props.value).page;
const lang = window.wbLanguage === "zh-CN" ? "zh-CN" : "en";
const S = page.strings[lang];
const WINDOW = 16; // positions in the attention heatmap
const PRESENT_WINDOW = 10; // fewer in presenter mode, so that cells and labels are large enough for a projector
const GRID_WINDOW = 12; // positions in each small head map
const LENS_COLUMNS = 8; // steps in the logit lens
const GAMMA = 0.5; // colour = weight ** GAMMA: a weight of 0.05 is a fifth of the darkest colour, not a twentieth

function t(key, params) {
  let s = S[key] || key;
  for (const [k, v] of Object.entries(params || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
}
function show(tok) {
  return (tok || "").replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅";
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function button(cls, text, title) {
  const b = el("button", "wb-btn " + cls, text);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

// ---- the page's skeleton ----
const wb = el("div", "wb");
root.appendChild(wb);
const bar = el("div", "wb-bar");
const title = el("span", "wb-title", t("title"));
const status = el("span", "wb-status");
const langBtn = button("wb-lang", t("language"));
const presentLabel = el("label", "wb-present-label");
const presentBox = el("input");
presentBox.type = "checkbox";
presentBox.className = "wb-present-toggle";
presentLabel.append(presentBox, document.createTextNode(" " + t("presenter")));
bar.append(title, status, el("span", "wb-spacer"), presentLabel, langBtn);

const textBox = el("div", "wb-text");
textBox.setAttribute("aria-label", t("text"));
const promptSpan = el("span", "wb-text-prompt");
const genSpan = el("span", "wb-text-gen");
textBox.append(promptSpan, genSpan);
const stripTitle = el("div", "wb-caption", t("tokens"));
const strip = el("div", "wb-strip");

const controls = el("div", "wb-controls");
const prevBtn = button("wb-prev", "◀", t("prev"));
const nextBtn = button("wb-next", "▶", t("next"));
const stepLabel = el("label", "wb-step-label", t("step") + " ");
const stepBox = el("input", "wb-step-box");
stepBox.type = "number";
stepBox.min = "0";
stepLabel.appendChild(stepBox);
const stepOf = el("span", "wb-step-of");
const slider = el("input", "wb-slider");
slider.type = "range";
slider.min = "0";
slider.max = "0";
const playBtn = button("wb-play", t("replay"));
const pace = el("select", "wb-pace");
for (const n of [1, 2, 5, 10]) {
  const o = el("option", "", t("pace", { n }));
  o.value = String(n);
  pace.appendChild(o);
}
pace.value = "2";
const layerSel = el("select", "wb-layer");
const headSel = el("select", "wb-head");
const shape = { L: 0, H: 0 };
function fillShape(L, H) {
  if (L === shape.L && H === shape.H) return;
  shape.L = L;
  shape.H = H;
  layerSel.replaceChildren(...Array.from({ length: L }, (_, i) => Object.assign(el("option", "", "L" + i), { value: String(i) })));
  headSel.replaceChildren(Object.assign(el("option", "", t("mean")), { value: "mean" }),
    ...Array.from({ length: H }, (_, i) => Object.assign(el("option", "", "H" + i), { value: String(i) })));
}
fillShape(page.model.layers, page.model.heads);
const layerLabel = el("label", "", t("layer") + " ");
layerLabel.appendChild(layerSel);
const headLabel = el("label", "", t("head") + " ");
headLabel.appendChild(headSel);
controls.append(prevBtn, stepLabel, stepOf, nextBtn, slider, playBtn, pace, layerLabel, headLabel);
const note = el("div", "wb-note");

function panel(cls) {
  const p = el("section", "wb-panel " + cls);
  const h = el("h4", "wb-panel-title");
  p.appendChild(h);
  return [p, h];
}
const [attPanel, attTitle] = panel("wb-att");
const attCanvas = el("canvas", "wb-att-canvas");
const legend = el("div", "wb-legend");
attPanel.append(attCanvas, legend);
const [candPanel, candTitle] = panel("wb-cands");
const candBars = el("div", "wb-bars");
candPanel.appendChild(candBars);
const main = el("div", "wb-main");
main.append(attPanel, candPanel);

const [pipePanel, pipeTitle] = panel("wb-pipe");
const stagesBox = el("div", "wb-stages");
pipePanel.appendChild(stagesBox);
const [lensPanel, lensTitle] = panel("wb-lens");
const lensGrid = el("div", "wb-lens-grid");
lensPanel.appendChild(lensGrid);
const [headsPanel, headsTitle] = panel("wb-heads");
const headGrid = el("div", "wb-head-grid");
headsPanel.appendChild(headGrid);
const [ablPanel, ablTitle] = panel("wb-abl");
const ablBars = el("div", "wb-abl-bars");
ablPanel.appendChild(ablBars);
ablPanel.hidden = true;
const [modelPanel, modelTitle] = panel("wb-model");
modelTitle.textContent = t("model");
const modelList = el("dl", "wb-model-list");
const m = page.model;
for (const [k, v] of [["model_name", m.name], ["model_params", m.params.toLocaleString("en-US")],
  ["model_shape", m.layers + " × " + m.heads], ["model_width", m.width], ["model_context", m.context],
  ["model_vocab", m.vocab], ["model_device", m.device]]) {
  modelList.append(el("dt", "", t(k)), el("dd", "", String(v)));
}
modelPanel.appendChild(modelList);
const more = el("div", "wb-more");
more.append(headsPanel, lensPanel, pipePanel, ablPanel, modelPanel);

wb.append(bar, textBox, stripTitle, strip, controls, note, main, more);
wb.dataset.state = "idle";
wb.dataset.steps = "0";
wb.dataset.sel = "-1";
wb.dataset.paints = "0";

// ---- the run, as received ----
let run = null; // {id, prompt, rows, steps, state, status, notes, text}
let sel = -1; // the selected step; every view shows it
let follow = true; // while streaming, the selection follows the newest step
let prevState = "idle";
let playing = null;
let gapPending = false;
let press = ""; // names the last click of Generate: Stop sends it, so that it stops that run and no later one
let shownAtPress = null; // what the page showed at that click, shown again if the press fails
let pressEnded = true; // the press's own run has ended (or the press failed): a Stop has nothing to stop
// Runs the page has moved on from. A frame of one of them (late, or sent again) never takes the page back to it:
// after a press, that would show the old run's end as this press's and leave Stop with nothing to stop.
const leftRuns = new Set();
function leave(old) {
  if (old) leftRuns.add(old.id);
}
const stash = [];
// One entry per paint, [steps shown, Date.now(), state, the server's time of its newest step (ms since the epoch)]:
// read by the browser tests and benchmarks/app.py (the page and a local server share the clock).
const paintLog = [];
window.wbPaintLog = paintLog;

function newRun(f) {
  const h = f.head;
  fillShape(h.shape[0], h.shape[1]);
  return { id: f.run, prompt: h.prompt, rows: h.rows, steps: [], state: f.state, status: f.status, notes: [], text: "",
    version: -1 };
}

function apply(f) {
  if (leftRuns.has(f.run)) return;
  if (!run || run.id !== f.run) {
    if (f.from !== 0 || !f.head) return requestGap(f.run, 0, f);
    leave(run);
    run = newRun(f);
    shownAtPress = null;
    sel = -1;
    follow = true;
  }
  // Frames are ordered by the steps they know of, a run's last frame after the others: a resend of missed steps
  // can overtake frames that were on their way, and those must not take the text or the state back.
  const version = 2 * f.status.new + (f.state === "generating" ? 0 : 1);
  if (version < run.version) return;
  if (f.from > run.steps.length || f.tx[0] > run.text.length) return requestGap(run.id, run.steps.length, f);
  if (f.head) run.rows = f.head.rows;
  run.steps.push(...f.steps.slice(run.steps.length - f.from));
  run.text = run.text.slice(0, f.tx[0]) + f.tx[1];
  run.state = f.state;
  run.status = f.status;
  run.notes = f.notes || [];
  run.tLast = f.t_last;
  run.version = version;
  if (f.state !== "generating") pressEnded = true; // a run after the last press is that press's run
  if (follow || sel < 0) sel = run.steps.length - 1;
  schedule();
}

async function requestGap(id, from, f) {
  stash.push(f);
  if (gapPending) return;
  gapPending = true;
  try {
    const got = await server.steps_since({ run: id, from: from });
    if (got && !leftRuns.has(got.run)) {
      if (!run || run.id !== got.run) {
        leave(run);
        run = newRun(got);
        shownAtPress = null;
      }
      if (got.from <= run.steps.length) apply(got);
    }
  } catch (e) {
    console.error("workbench: could not fetch missed steps", e);
  } finally {
    gapPending = false;
  }
  const waiting = stash.splice(0);
  for (const g of waiting) if (!run || g.run === run.id) apply(g); // frames that came meanwhile
}

function onValue() {
  const v = parse(props.value);
  if (!v || typeof v !== "object") return;
  if (v.ablation) return showAblation(v.ablation);
  if (v.run) apply(v);
}
watch("value", onValue);

// ---- Generate and Stop (ui.py's events call these from their own JS) ----
// Generate was pressed: the run waits for a generator until its first frame comes. Returns the press's name.
window.wbPress = () => {
  press = Math.random().toString(36).slice(2) + Date.now().toString(36);
  pressEnded = false;
  shownAtPress = { run, sel, follow };
  leave(run);
  stopPlaying();
  run = null;
  sel = -1;
  follow = true;
  prevState = "waiting";
  note.textContent = "";
  schedule();
  return press;
};
// What Stop sends: the last press, until its run has ended.
window.wbStopPress = () => (pressEnded ? "" : press);
// The press failed before its run began (bad input, a full queue): the page shows what it showed before.
window.wbRefused = () => {
  if (run !== null || !shownAtPress) return;
  pressEnded = true;
  ({ run, sel, follow } = shownAtPress);
  shownAtPress = null;
  if (run) leftRuns.delete(run.id);
  if (!run) prevState = "idle";
  schedule();
};

// ---- the selected step ----
function stepCount() {
  return run ? run.steps.length : 0;
}
function select(i, fromUser) {
  const n = stepCount();
  if (!n) return;
  sel = Math.max(0, Math.min(n - 1, i));
  if (fromUser) follow = sel === n - 1 && run.state === "generating";
  schedule();
}
prevBtn.addEventListener("click", () => select(sel - 1, true));
nextBtn.addEventListener("click", () => select(sel + 1, true));
slider.addEventListener("input", () => select(Number(slider.value), true));
stepBox.addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    e.preventDefault();
    select(Number(stepBox.value), true);
  }
});
stepBox.addEventListener("change", () => select(Number(stepBox.value), true));
layerSel.addEventListener("change", schedule);
headSel.addEventListener("change", schedule);
document.addEventListener("keydown", (e) => {
  const tag = (e.target && e.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag) && e.target !== slider) return;
  if (e.target === slider) return; // the slider moves itself and says so with an input event
  if (e.key === "ArrowLeft") select(sel - 1, true);
  else if (e.key === "ArrowRight") select(sel + 1, true);
  else return;
  e.preventDefault();
});
strip.addEventListener("click", (e) => {
  const span = e.target.closest(".wb-tok");
  if (!span || !run) return;
  const pos = Number(span.dataset.pos);
  const P = run.prompt.length;
  if (pos < P) {
    note.textContent = t("prompt_token", { pos });
    note.dataset.kind = "prompt";
    return;
  }
  select(pos - P, true);
});
function stopPlaying() {
  if (playing) clearInterval(playing);
  playing = null;
  playBtn.textContent = t("replay");
}
playBtn.addEventListener("click", () => {
  if (playing) return stopPlaying();
  if (!stepCount()) return;
  if (sel >= stepCount() - 1) sel = -1;
  follow = false;
  playBtn.textContent = t("pause");
  const tick = () => {
    if (sel >= stepCount() - 1) return stopPlaying();
    select(sel + 1, false);
  };
  tick();
  playing = setInterval(tick, 1000 / Number(pace.value));
});
pace.addEventListener("change", () => {
  if (playing) {
    stopPlaying();
    playBtn.click();
  }
});
// Gradio chose its locale from the browser's language before the page could say otherwise; when the switch chose
// the other one, Gradio's own locale is changed, so that its widgets (labelled from our table), its footer and its
// pop-ups all follow. Its changeLocale lives in the module the page already loaded: the same instance is imported.
if ((window.wbBrowserLanguage || "en") !== lang) {
  const core = performance.getEntriesByType("resource").map((e) => e.name).find((n) => /\/core-[^/]*\.js$/.test(n));
  if (core) import(core).then((m) => m.changeLocale && m.changeLocale(lang)).catch(() => {});
}
// Gradio titles its pop-ups with their type in English ("Error"), whatever the locale: put the title in the page's
// language as each pop-up appears.
new MutationObserver(() => {
  for (const title of document.querySelectorAll(".toast-title")) {
    const type = ["error", "warning", "info", "success"].find((k) => title.classList.contains(k));
    const span = title.querySelector("span") || title;
    if (type && S["toast_" + type] && span.firstChild && span.firstChild.textContent.trim() !== S["toast_" + type]) {
      span.firstChild.textContent = S["toast_" + type] + " ";
    }
  }
}).observe(document.body, { subtree: true, childList: true });
langBtn.addEventListener("click", () => {
  const url = new URL(window.location.href);
  url.searchParams.set("lang", lang === "zh-CN" ? "en" : "zh-CN");
  window.location.href = url.toString();
});
presentBox.checked = document.documentElement.classList.contains("wb-present");
presentBox.addEventListener("change", () => {
  document.documentElement.classList.toggle("wb-present", presentBox.checked);
  const url = new URL(window.location.href);
  if (presentBox.checked) url.searchParams.set("present", "1");
  else url.searchParams.delete("present");
  window.history.replaceState(null, "", url.toString());
  schedule();
});
window.addEventListener("resize", schedule);

// ---- drawing: at most once per animation frame, always the latest state ----
// While a run streams, at most one paint per STREAM_PAINT_MS: each paint redraws every view at the newest step,
// and on a small machine the browser's drawing takes the CPU the model needs. Ten a second still look live.
const STREAM_PAINT_MS = 100;
let drawQueued = false;
let paintTimer = null; // a paint held back by the streaming rate
let lastPaint = 0;
function schedule() {
  // The first token of a run is painted at once, and so is its end: the last tokens do not wait out the rate.
  const streaming = run && run.state === "generating" && Number(wb.dataset.steps) > 0 && wb.dataset.run === run.id;
  if (drawQueued && !(paintTimer !== null && !streaming)) return;
  if (paintTimer !== null) clearTimeout(paintTimer);
  paintTimer = null;
  drawQueued = true;
  const paint = () => {
    paintTimer = null;
    requestAnimationFrame(() => {
      drawQueued = false;
      lastPaint = performance.now();
      draw();
    });
  };
  const wait = streaming ? lastPaint + STREAM_PAINT_MS - performance.now() : 0;
  if (wait > 0) paintTimer = setTimeout(paint, wait);
  else paint();
}

function tokenAt(pos) {
  const P = run.prompt.length;
  return pos < P ? run.prompt[pos] : run.steps[pos - P].t;
}
function rowAt(q) {
  // The attention row of position q: a prompt row, or the row of the step that q produced.
  const P = run.prompt.length;
  const r = q < P - 1 ? run.rows[q] : run.steps[q - (P - 1)];
  if (!r || !r.a) return null;
  if (!r.w) {
    // A plain loop: Uint8Array.from calls a function per byte, which showed in the page's profile with its garbage.
    const chars = atob(r.a);
    const bytes = new Uint8Array(chars.length);
    for (let i = 0; i < chars.length; i++) bytes[i] = chars.charCodeAt(i);
    r.w = new Uint16Array(bytes.buffer);
  }
  return r;
}
function weight(q, k, layer, head) {
  // Attention of query q on key k; 0 where the row does not reach (before its window, or cut).
  const r = rowAt(q);
  if (!r) return 0;
  const first = q - r.n + 1;
  if (k < first || k > q) return 0;
  const H = shape.H;
  const at = (h) => r.w[(layer * H + h) * r.n + (k - first)] / 65535;
  if (head !== "mean") return at(head);
  let s = 0;
  for (let h = 0; h < H; h++) s += at(h);
  return s / H;
}
const RAMP = [[0, [247, 251, 255]], [0.55, [66, 146, 198]], [1, [8, 48, 107]]]; // white, mid blue, dark blue
function rampAt(x) {
  const i = x <= RAMP[1][0] ? 0 : 1;
  const [x0, c0] = RAMP[i];
  const [x1, c1] = RAMP[i + 1];
  const f = (x - x0) / (x1 - x0);
  return c0.map((v, k) => Math.round(v + f * (c1[k] - v)));
}
// 256 steps of the scale, computed once: a paint looks colours up instead of building them.
const PALETTE = Array.from({ length: 256 }, (_, i) => rampAt(i / 255));
const PALETTE_CSS = PALETTE.map((c) => `rgb(${c[0]},${c[1]},${c[2]})`);
function shade(w) {
  return Math.round(255 * Math.pow(Math.max(0, Math.min(1, w)), GAMMA));
}
function colour(w) {
  return PALETTE_CSS[shade(w)];
}

function drawStatus() {
  const state = run ? run.state : prevState === "waiting" ? "waiting" : "idle";
  wb.dataset.state = state;
  let line = t("state_" + state);
  if (run && run.status) {
    const s = run.status;
    const speed = s.seconds > 0 ? (s.new / s.seconds).toFixed(1) : "0.0";
    line += " · " + t("status_counts", { prompt: s.prompt, new: s.new, speed, seed: s.seed });
  }
  status.textContent = line;
}

let shownText = null;
function drawText() {
  // While the run streams, the whole text; afterwards, the text up to the selected step (a replay writes it again).
  // A growing text is appended to, not set again: the box is not laid out anew for every paint.
  setText(promptSpan, run ? run.prompt.join("") : "");
  const n = stepCount();
  let text = "";
  if (run && (run.state === "generating" || sel >= n - 1)) text = run.text;
  else if (run) text = run.steps.slice(0, sel + 1).map((s) => s.t).join("");
  if (shownText !== null && text.startsWith(shownText) && genSpan.firstChild) {
    if (text.length > shownText.length) genSpan.firstChild.appendData(text.slice(shownText.length));
  } else genSpan.textContent = text;
  shownText = text;
}

let stripCount = 0;
let stripRun = null;
function drawStrip() {
  if (!run) {
    strip.replaceChildren();
    stripCount = 0;
    stripRun = null;
    return;
  }
  if (stripRun !== run.id) {
    strip.replaceChildren();
    stripCount = 0;
    stripRun = run.id;
  }
  const P = run.prompt.length;
  const total = P + run.steps.length;
  const frag = document.createDocumentFragment();
  for (let pos = stripCount; pos < total; pos++) {
    const span = el("span", "wb-tok", show(tokenAt(pos)));
    span.dataset.pos = String(pos);
    if (pos < P) span.classList.add("wb-tok-prompt");
    else {
      const p = run.steps[pos - P].p;
      span.style.background = `rgba(255, 140, 0, ${0.12 + 0.78 * p})`;
      span.title = "p = " + p.toFixed(3);
    }
    frag.appendChild(span);
  }
  strip.appendChild(frag);
  stripCount = total;
  const old = strip.querySelector(".wb-sel");
  if (old) old.classList.remove("wb-sel");
  if (sel >= 0 && strip.children[P + sel]) strip.children[P + sel].classList.add("wb-sel");
}

function drawControls() {
  const n = stepCount();
  slider.max = String(Math.max(0, n - 1));
  slider.value = String(Math.max(0, sel));
  stepBox.max = String(Math.max(0, n - 1));
  if (document.activeElement !== stepBox) stepBox.value = String(Math.max(0, sel));
  stepOf.textContent = t("step_of", { n: Math.max(0, n - 1) });
  const msgs = run ? run.notes.map((nt) => t(nt.key, nt)) : [];
  if (note.dataset.kind !== "prompt" || !run) {
    note.textContent = msgs.join("  ");
    note.dataset.kind = "notes";
  }
}

function currentView() {
  return { layer: Number(layerSel.value || 0), head: headSel.value === "mean" ? "mean" : Number(headSel.value) };
}

function drawAttention(geom) {
  const ctx = attCanvas.getContext("2d");
  const cssW = Math.max(200, geom.attWidth - 16);
  const big = document.documentElement.classList.contains("wb-present");
  const font = big ? 15 : 12;
  if (!run || sel < 0) {
    attTitle.textContent = t("attention_empty");
    attCanvas.width = cssW;
    attCanvas.height = 40;
    ctx.clearRect(0, 0, attCanvas.width, attCanvas.height);
    return;
  }
  const view = currentView();
  const P = run.prompt.length;
  const q = P - 1 + sel;
  const lo = Math.max(0, q - (big ? PRESENT_WINDOW : WINDOW) + 1);
  const n = q - lo + 1;
  const who = view.head === "mean" ? t("mean") : "H" + view.head;
  attTitle.textContent = t("attention", { layer: view.layer, head: who, step: sel, query: show(tokenAt(q)), token: show(run.steps[sel].t) });
  const labelW = Math.min(130, Math.round(cssW * 0.22));
  const top = Math.round(font * 4.6);
  // Cells as large as the type allows, but the whole map stays on the screen: a projector shows one screen and a
  // class cannot scroll it (what is above the canvas fixes how much height is left).
  const below = geom.height - geom.attTop - top - 28;
  const cell = Math.max(6, Math.min(Math.floor((cssW - labelW) / n), Math.floor(below / n), big ? 24 : 14));
  const dpr = window.devicePixelRatio || 1;
  const W = labelW + cell * n + 4;
  const H = top + cell * n + 4;
  if (attCanvas.width !== Math.round(W * dpr) || attCanvas.height !== Math.round(H * dpr)) {
    attCanvas.width = Math.round(W * dpr);
    attCanvas.height = Math.round(H * dpr);
    attCanvas.style.width = W + "px";
    attCanvas.style.height = H + "px";
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.font = `${Math.min(font, cell)}px ui-monospace, monospace`;
  ctx.fillStyle = "#222";
  ctx.textBaseline = "middle";
  for (let i = 0; i < n; i++) {
    const pos = lo + i;
    const label = pos + ":" + show(tokenAt(pos)).slice(0, 8);
    ctx.textAlign = "right";
    ctx.fillText(label, labelW - 4, top + i * cell + cell / 2);
    ctx.save();
    ctx.translate(labelW + i * cell + cell / 2, top - 4);
    ctx.rotate(-Math.PI / 3);
    ctx.textAlign = "left";
    ctx.fillText(label, 0, 0);
    ctx.restore();
    for (let j = 0; j <= i; j++) {
      ctx.fillStyle = colour(weight(pos, lo + j, view.layer, view.head));
      ctx.fillRect(labelW + j * cell, top + i * cell, cell - 1, cell - 1);
    }
    ctx.fillStyle = "#222";
  }
  ctx.strokeStyle = "#d62728";
  ctx.lineWidth = 2;
  ctx.strokeRect(labelW - 1, top + (n - 1) * cell - 1, cell * n + 1, cell + 1);
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
function ensureChildren(parent, n, make) {
  // Reuse the children a view already has: rebuilding them on every paint made the browser lay out the page anew.
  while (parent.children.length < n) parent.appendChild(make());
  while (parent.children.length > n) parent.lastChild.remove();
  return parent.children;
}
function makeBarRow() {
  const row = el("div", "wb-bar-row");
  const track = el("span", "wb-bar-track");
  track.appendChild(el("span", "wb-bar-fill"));
  row.append(el("span", "wb-bar-label"), track, el("span", "wb-bar-value"));
  return row;
}
function setBarRow(row, label, p, picked, maxP) {
  setText(row.children[0], show(label));
  row.children[1].firstChild.style.width = (100 * p / (maxP || 1)).toFixed(1) + "%";
  setText(row.children[2], p.toFixed(3));
  row.classList.toggle("wb-picked", picked);
}

function drawCandidates() {
  if (!run || sel < 0) {
    candTitle.textContent = t("candidates_empty");
    candBars.replaceChildren();
    return;
  }
  const s = run.steps[sel];
  setText(candTitle, t("candidates", { step: sel }));
  const rows = s.top.map(([str, p, id]) => [str, p, id === s.id]);
  if (!rows.some((r) => r[2])) rows.push([s.t, s.p, true]);
  const maxP = s.top.length ? s.top[0][1] : 1;
  const kids = ensureChildren(candBars, rows.length, makeBarRow);
  rows.forEach(([str, p, picked], i) => setBarRow(kids[i], str, p, picked, maxP));
}

function makeStage() {
  const col = el("div", "wb-stage");
  col.append(el("div", "wb-stage-name"), el("div", "wb-stage-kept"), el("div", "wb-stage-bars"));
  return col;
}
function drawPipeline() {
  if (!run || sel < 0) {
    pipeTitle.textContent = t("pipeline_empty");
    stagesBox.replaceChildren();
    return;
  }
  const s = run.steps[sel];
  setText(pipeTitle, t("pipeline", { step: sel }));
  const cols = ensureChildren(stagesBox, s.stages.length, makeStage);
  s.stages.forEach(([name, kept, cands], i) => {
    const col = cols[i];
    setText(col.children[0], t("stage_" + name));
    setText(col.children[1], t("kept", { n: kept }));
    const top = cands.slice(0, 5);
    const maxP = top.length ? top[0][1] : 1;
    const bars = ensureChildren(col.children[2], top.length, makeBarRow);
    top.forEach(([str, p, id], j) => setBarRow(bars[j], str, p, id === s.id, maxP));
  });
}

function drawLens() {
  if (!run || sel < 0 || !run.steps[sel].lens) {
    lensTitle.textContent = t("lens_empty");
    lensGrid.replaceChildren();
    return;
  }
  setText(lensTitle, t("lens", { step: sel }));
  const first = Math.max(0, sel - LENS_COLUMNS + 1);
  const cols = sel - first + 1;
  const rows = run.steps[sel].lens.length;
  const template = `minmax(10em, auto) repeat(${cols}, minmax(3.5em, 1fr))`;
  if (lensGrid.style.gridTemplateColumns !== template) lensGrid.style.gridTemplateColumns = template;
  const cells = ensureChildren(lensGrid, (cols + 1) * (rows + 1), () => el("div"));
  const P = run.prompt.length;
  let k = 0;
  const cell = (cls, text) => {
    const c = cells[k++];
    if (c.className !== cls) c.className = cls;
    setText(c, text);
    return c;
  };
  cell("wb-lens-corner", "");
  for (let i = first; i <= sel; i++) {
    cell("wb-lens-head" + (i === sel ? " wb-lens-cur" : ""), show(tokenAt(P - 1 + i)) + " →").title =
      t("lens_position", { pos: P - 1 + i });
  }
  for (let r = rows - 1; r >= 0; r--) {
    cell("wb-lens-row", t(r % 2 ? "lens_mlp" : "lens_attn", { layer: Math.floor(r / 2) }));
    for (let i = first; i <= sel; i++) {
      const [str, p] = run.steps[i].lens[r][0];
      const hit = str === run.steps[i].t ? " wb-lens-hit" : "";
      const c = cell("wb-lens-cell" + (i === sel ? " wb-lens-cur" : "") + hit, show(str));
      const bg = `rgba(44, 160, 44, ${(0.08 + 0.8 * p).toFixed(2)})`;
      const tipKey = run.steps[i].lens[r].map(([s2, p2]) => s2 + p2).join("|");
      if (c.dataset.tip !== tipKey) {
        c.dataset.tip = tipKey;
        c.style.background = bg;
        c.title = run.steps[i].lens[r].map(([s2, p2]) => show(s2) + " " + p2.toFixed(3)).join("\n");
      }
    }
  }
}

function makeHeadBox() {
  const box = el("div", "wb-head-box");
  box.append(el("canvas"), el("div", "wb-head-name"));
  box.addEventListener("click", () => {
    headSel.value = box.dataset.h;
    schedule();
  });
  return box;
}
function drawHeads() {
  const view = currentView();
  if (!run || sel < 0) {
    headsTitle.textContent = t("heads", { layer: view.layer, n: GRID_WINDOW });
    headGrid.replaceChildren();
    return;
  }
  const q = run.prompt.length - 1 + sel;
  const lo = Math.max(0, q - GRID_WINDOW + 1);
  const n = q - lo + 1;
  setText(headsTitle, t("heads", { layer: view.layer, n }));
  // One pixel per cell, scaled up by the page (image-rendering: pixelated): no shape to draw per cell.
  const size = Math.max(3, Math.floor(84 / n)) * n;
  const boxes = ensureChildren(headGrid, shape.H, makeHeadBox);
  for (let h = 0; h < shape.H; h++) {
    const box = boxes[h];
    box.dataset.h = String(h);
    box.classList.toggle("wb-head-cur", view.head === h);
    const c = box.firstChild;
    if (c.width !== n) {
      c.width = n;
      c.height = n;
    }
    c.style.width = c.style.height = size + "px";
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(n, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const rgb = PALETTE[j <= i ? shade(weight(lo + i, lo + j, view.layer, h)) : 0];
        const at = 4 * (i * n + j);
        img.data[at] = rgb[0];
        img.data[at + 1] = rgb[1];
        img.data[at + 2] = rgb[2];
        img.data[at + 3] = j <= i ? 255 : 0;
      }
    }
    ctx.putImageData(img, 0, 0);
    setText(box.lastChild, "L" + view.layer + "H" + h);
  }
}

function showAblation(a) {
  ablPanel.hidden = false;
  ablTitle.textContent = t("ablation_chart", { heads: (a.heads || []).join(", ") });
  ablBars.replaceChildren();
  const head = el("div", "wb-abl-legend");
  head.append(el("span", "wb-abl-base", t("ablation_base")), el("span", "wb-abl-off", t("ablation_off")));
  ablBars.appendChild(head);
  a.tokens.forEach((tok, i) => {
    const row = el("div", "wb-abl-row");
    const b = el("span", "wb-abl-bar wb-abl-base");
    b.style.width = (100 * a.base[i]).toFixed(1) + "%";
    const o = el("span", "wb-abl-bar wb-abl-off");
    o.style.width = (100 * a.off[i]).toFixed(1) + "%";
    const track = el("span", "wb-abl-track");
    track.append(b, o);
    row.append(el("span", "wb-bar-label", show(tok)), track);
    row.title = `${a.base[i].toFixed(3)} → ${a.off[i].toFixed(3)}`;
    ablBars.appendChild(row);
  });
}

// Views scrolled out of sight are not drawn (nobody would see them, and drawing them takes CPU from the model on
// a small machine); one that comes into sight is drawn at once.
const inSight = new Set();
const sight = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (e.isIntersecting) inSight.add(e.target);
    else inSight.delete(e.target);
  }
  schedule();
});
for (const view of [attPanel, candPanel, pipePanel, lensPanel, headsPanel]) sight.observe(view);
function drawIfSeen(view, drawView, geom) {
  if (inSight.has(view)) drawView(geom);
}

// A paint reads the page's geometry once, before it changes anything, and scrolls once, after: reading a size
// between two changes makes the browser lay the whole page out again, several times a paint.
function measure() {
  return {
    textAtEnd: textBox.scrollTop + textBox.clientHeight >= textBox.scrollHeight - 24,
    attWidth: attPanel.clientWidth,
    attTop: attCanvas.getBoundingClientRect().top + window.scrollY, // in the page, wherever it is scrolled to
    height: window.innerHeight,
  };
}
function scrollToCurrent(geom) {
  // The text follows the stream (unless the reader scrolled up), and the strip keeps the selected token in view.
  if (geom.textAtEnd || follow || playing) textBox.scrollTop = textBox.scrollHeight;
  const cur = strip.querySelector(".wb-sel");
  if (!cur) return;
  const box = strip.getBoundingClientRect();
  const r = cur.getBoundingClientRect();
  if (r.top < box.top || r.bottom > box.bottom) strip.scrollTop += r.top - box.top - box.height / 2 + r.height / 2;
}

function draw() {
  const geom = measure();
  drawStatus();
  drawText();
  drawStrip();
  drawControls();
  drawIfSeen(attPanel, drawAttention, geom);
  drawIfSeen(candPanel, drawCandidates);
  drawIfSeen(pipePanel, drawPipeline);
  drawIfSeen(lensPanel, drawLens);
  drawIfSeen(headsPanel, drawHeads);
  scrollToCurrent(geom);
  wb.dataset.steps = String(stepCount());
  wb.dataset.sel = String(sel);
  wb.dataset.paints = String(Number(wb.dataset.paints) + 1);
  wb.dataset.run = run ? run.id : "";
  paintLog.push([stepCount(), Date.now(), wb.dataset.state, run ? run.tLast : 0]);
  if (paintLog.length > 5000) paintLog.splice(0, 1000);
}
legend.appendChild(el("span", "wb-legend-text", t("scale")));
for (const w of [0, 0.05, 0.25, 0.5, 1]) {
  const sw = el("span", "wb-swatch", String(w));
  sw.style.background = colour(w);
  sw.style.color = w > 0.3 ? "white" : "#222";
  legend.appendChild(sw);
}
schedule();
