/* LDSE Autofocus operator page: plain JavaScript, no build step, no external libraries.
 *
 * Data sources: GET /status (every second: Z, limits, busy job, focus lock, simulated truth),
 * GET /estimate (every 2 s while idle: the model's estimate of the live frame + 3x3 region map),
 * GET /jobs/{id}/events (server-sent events of the running job), GET /runs (the run record),
 * GET /stream.mjpg (live view). Everything that moves sends the API key kept in localStorage.
 */
"use strict";

const KEY_STORE = "ldse-autofocus.apiKey";
const TRACE_WINDOW_S = 180;
const STATUS_PERIOD_MS = 1000;
const ESTIMATE_PERIOD_MS = 2000;
const OFFSET_FRAMES = 5;     // live estimates whose median "Set from estimate" takes
// "hold this focus": the sweep and integral gain of the lock that held best in simulation
// (autofocus.calibration_settings LOCK_CURVE_RANGE_UM / LOCK_INTEGRAL_GAIN; docs/autofocus.md)
const LOCK_CURVE_RANGE_UM = 4;
const LOCK_INTEGRAL_GAIN = 0.2;

const $ = (id) => document.getElementById(id);

const ui = {
  key: localStorage.getItem(KEY_STORE) || "",
  status: null,
  readRequiresKey: false,
  trackedJob: null,      // id of the job whose events we follow
  events: null,          // its EventSource
  estimating: false,
  liveEstimates: [],     // the last live estimates [{z, v}], for "Set from estimate"
  regionMap: null,
  calibration: null,     // GET /calibration's summary when one is stored
  suggestedAim: null,    // GET /calibration's suggested_aim_um: the first-move aim measured best with one
  series: { z: [], est: [], truth: [] },
  connected: false,
};

/* ---------------------------------------------------------------- helpers --------- */
function fmt(value, digits = 2, unit = "") {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const text = Number(value).toFixed(digits);
  return unit ? `${text} ${unit}` : text;
}
function signed(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  return (value >= 0 ? "+" : "") + Number(value).toFixed(digits);
}
function now() { return performance.now() / 1000; }

function keyQuery() {
  return ui.readRequiresKey && ui.key ? `?api_key=${encodeURIComponent(ui.key)}` : "";
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (ui.key) options.headers["X-API-Key"] = ui.key;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error((data && data.detail) || response.statusText);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

function toast(title, detail, kind = "") {
  const box = document.createElement("div");
  box.className = `toast ${kind}`;
  const strong = document.createElement("b");
  strong.textContent = title;
  box.appendChild(strong);
  if (detail) box.appendChild(document.createTextNode(detail));
  $("toasts").appendChild(box);
  setTimeout(() => box.remove(), kind === "bad" ? 8000 : 4000);
}

function failed(what, error) {
  if (error.status === 401) setKeyState("bad", "wrong or missing key");
  toast(`${what} failed`, error.message, "bad");
}

/* ---------------------------------------------------------------- API key ---------- */
function setKeyState(kind, text) {
  const el = $("key-state");
  el.className = `key-state ${kind}`;
  el.textContent = text;
}

function initKey() {
  $("api-key").value = ui.key;
  setKeyState(ui.key ? "" : "", ui.key ? "key saved" : "no key");
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ui.key = $("api-key").value.trim();
    if (ui.key) localStorage.setItem(KEY_STORE, ui.key);
    else localStorage.removeItem(KEY_STORE);
    setKeyState(ui.key ? "ok" : "", ui.key ? "key saved" : "no key");
    startLiveView();
    loadCalibration();  // a service that needs the key to read could not tell us before
  });
}

/* ---------------------------------------------------------------- live view -------- */
function startLiveView() {
  const img = $("live");
  img.onload = () => {
    $("viewer").classList.add("has-frames");
    $("live-badge").classList.add("on");
    drawOverlay();
  };
  img.onerror = () => {
    $("viewer").classList.remove("has-frames");
    $("live-badge").classList.remove("on");
    $("viewer-msg").textContent = "live view interrupted, reconnecting…";
    setTimeout(startLiveView, 2000);
  };
  img.src = `/stream.mjpg${keyQuery()}${keyQuery() ? "&" : "?"}t=${Date.now()}`;
}

/* Region map: 3x3 cells over the displayed frame, coloured by defocus (blue < 0 < red). */
function drawOverlay() {
  const canvas = $("overlay");
  const img = $("live");
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(rect.width * dpr);
  canvas.height = Math.round(rect.height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  const map = ui.regionMap;
  if (!map || !$("show-map").checked || !img.naturalWidth) return;
  const scale = Math.min(rect.width / img.naturalWidth, rect.height / img.naturalHeight);
  const w = img.naturalWidth * scale;
  const h = img.naturalHeight * scale;
  const x0 = (rect.width - w) / 2;
  const y0 = (rect.height - h) / 2;
  const values = map.flat().filter((v) => v !== null);
  const range = Math.max(1, ...values.map((v) => Math.abs(v)));
  ctx.font = `600 ${Math.max(11, Math.min(18, w / 22))}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (let r = 0; r < 3; r += 1) {
    for (let c = 0; c < 3; c += 1) {
      const v = map[r][c];
      const cx = x0 + (c * w) / 3;
      const cy = y0 + (r * h) / 3;
      if (v !== null) {
        const a = 0.12 + 0.33 * Math.min(1, Math.abs(v) / range);
        ctx.fillStyle = v >= 0 ? `rgba(239, 68, 68, ${a})` : `rgba(59, 130, 246, ${a})`;
        ctx.fillRect(cx, cy, w / 3, h / 3);
      }
      ctx.strokeStyle = "rgba(226, 232, 240, 0.35)";
      ctx.lineWidth = 1;
      ctx.strokeRect(cx + 0.5, cy + 0.5, w / 3 - 1, h / 3 - 1);
      const label = v === null ? "no usable tile" : `${signed(v, 2)} µm`;
      ctx.fillStyle = "rgba(5, 8, 15, 0.6)";
      const tw = ctx.measureText(label).width + 12;
      ctx.fillRect(cx + w / 6 - tw / 2, cy + h / 6 - 12, tw, 24);
      ctx.fillStyle = v === null ? "#94a3b8" : "#f8fafc";
      ctx.fillText(label, cx + w / 6, cy + h / 6);
    }
  }
}

/* ---------------------------------------------------------------- trace ------------ */
function pushPoint(name, value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return;
  const series = ui.series[name];
  const t = now();
  series.push({ t, v: value });
  while (series.length && series[0].t < t - TRACE_WINDOW_S) series.shift();
}

/* Axis range and ticks at 1-2-5 steps covering the values (at least minSpan wide). */
function niceAxis(values, minSpan) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) {
    lo = 0;
    hi = 0;
  }
  const mid = (hi + lo) / 2;
  const span = Math.max(hi - lo, minSpan) * 1.15;
  lo = mid - span / 2;
  hi = mid + span / 2;
  const raw = span / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const first = Math.floor(lo / step) * step;
  const last = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = first; v <= last + step / 2; v += step) ticks.push(Number(v.toFixed(6)));
  return { lo: first, hi: last, ticks, digits: Math.max(0, -Math.floor(Math.log10(step))) };
}

/* The time window: the whole history until it is longer than TRACE_WINDOW_S (at least 30 s). */
function traceWindow() {
  const starts = Object.values(ui.series).filter((s) => s.length).map((s) => s[0].t);
  const age = starts.length ? now() - Math.min(...starts) : 0;
  return Math.min(TRACE_WINDOW_S, Math.max(30, Math.ceil(age / 10) * 10));
}

function drawPanel(ctx, box, seriesList, minSpan, title, zeroLine, windowS) {
  const { x, y, w, h } = box;
  const t1 = now();
  const t0 = t1 - windowS;
  const all = seriesList.flatMap((s) => s.points.filter((p) => p.t >= t0).map((p) => p.v));
  const axis = niceAxis(all, minSpan);
  const sx = (t) => x + ((t - t0) / (t1 - t0)) * w;
  const sy = (v) => y + h - ((v - axis.lo) / (axis.hi - axis.lo)) * h;
  ctx.strokeStyle = "#24314b";
  ctx.fillStyle = "#8b9ab3";
  ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of axis.ticks) {
    const yy = Math.round(sy(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, yy);
    ctx.lineTo(x + w, yy);
    ctx.stroke();
    ctx.fillText(v.toFixed(axis.digits), x - 6, yy);
  }
  if (zeroLine && axis.lo < 0 && axis.hi > 0) {
    ctx.strokeStyle = "#4b6390";
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(x, sy(0));
    ctx.lineTo(x + w, sy(0));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y - 2, w, h + 4);
  ctx.clip();
  for (const s of seriesList) {
    const points = s.points.filter((p) => p.t >= t0 - 1);
    if (!points.length) continue;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    points.forEach((p, i) => {
      if (i === 0) ctx.moveTo(sx(p.t), sy(p.v));
      else ctx.lineTo(sx(p.t), sy(p.v));
    });
    ctx.stroke();
    ctx.setLineDash([]);
    if (s.dots) {
      ctx.fillStyle = s.color;
      for (const p of points) {
        ctx.beginPath();
        ctx.arc(sx(p.t), sy(p.v), 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }
  ctx.restore();
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillStyle = "rgba(18, 26, 43, 0.85)";
  ctx.fillRect(x + 4, y + 2, ctx.measureText(title).width + 10, 16);
  ctx.fillStyle = "#cbd5e1";
  ctx.fillText(title, x + 9, y + 4);
}

function drawTrace() {
  const canvas = $("trace");
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(rect.width * dpr);
  canvas.height = Math.round(rect.height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  const left = 52;
  const right = 10;
  const top = 8;
  const gap = 22;
  const bottom = 18;
  const panelH = (rect.height - top - gap - bottom) / 2;
  const w = rect.width - left - right;
  const windowS = traceWindow();
  drawPanel(ctx, { x: left, y: top, w, h: panelH }, [{ points: ui.series.z, color: "#60a5fa" }], 1, "Z (µm)", false, windowS);
  drawPanel(
    ctx,
    { x: left, y: top + panelH + gap, w, h: panelH },
    [
      { points: ui.series.truth, color: "#a78bfa", dash: [5, 4] },
      { points: ui.series.est, color: "#f59e0b", dots: true },
    ],
    2,
    "defocus (µm)",
    true,
    windowS,
  );
  ctx.fillStyle = "#8b9ab3";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "alphabetic";
  const tickS = windowS <= 60 ? 10 : 30;
  for (let s = 0; s <= windowS; s += tickS) {
    const x = left + (1 - s / windowS) * w;
    ctx.textAlign = s === 0 ? "right" : "center";
    ctx.fillText(s === 0 ? "now" : `-${s} s`, x, rect.height - 3);
  }
}

/* ---------------------------------------------------------------- status ----------- */
function setConn(ok, text) {
  ui.connected = ok;
  $("conn").className = `conn ${ok ? "ok" : "bad"}`;
  $("conn-text").textContent = text;
}

function renderStatus(s) {
  ui.status = s;
  ui.readRequiresKey = s.read_requires_key;
  renderCalibration(s.calibration || null);  // another client may have stored or dropped one
  const dev = s.devices || {};
  const model = s.model || {};
  $("backend-info").textContent =
    `camera: ${dev.camera_backend} · stage: ${dev.stage_backend} · model: ${model.runtime || "?"}` +
    (model.status && String(model.status).startsWith("untrained") ? " (untrained placeholder)" : "");
  const stage = s.stage;
  if (stage) {
    $("z-value").textContent = fmt(stage.z_um, 2);
    const [lo, hi] = stage.limits_um;
    $("limit-lo").textContent = `${fmt(lo, 0)} µm`;
    $("limit-hi").textContent = `${fmt(hi, 0)} µm`;
    $("max-step").textContent = `max step ${fmt(stage.max_step_um, 0)} µm`;
    const frac = Math.min(1, Math.max(0, (stage.z_um - lo) / (hi - lo)));
    $("limit-marker").style.left = `${(frac * 100).toFixed(2)}%`;
    $("goto-z").min = lo;
    $("goto-z").max = hi;
    pushPoint("z", stage.z_um);
  }
  const truth = s.simulated_truth;
  $("truth-box").hidden = !truth;
  document.querySelector(".truth-legend").hidden = !truth;
  if (truth) {
    $("truth").textContent = `${signed(truth.defocus_um, 2)} µm`;
    pushPoint("truth", truth.defocus_um);
  }
  const busy = s.busy_job;
  const stageBadge = $("stage-busy");
  stageBadge.textContent = busy ? `${busy.kind} running` : stage && stage.busy ? "moving" : "idle";
  stageBadge.className = `badge ${busy || (stage && stage.busy) ? "run" : ""}`;
  for (const id of ["af-oneshot", "af-hybrid", "af-zscan", "step-up", "step-down"]) $(id).disabled = Boolean(busy);
  document.querySelector("#goto-form button").disabled = Boolean(busy);
  const lock = s.focus_lock || {};
  $("lock-toggle").checked = Boolean(lock.active);
  $("lock-badge").textContent = lock.active ? "locked" : "off";
  $("lock-badge").className = `badge ${lock.active ? "ok" : ""}`;
  if (busy && ui.trackedJob !== busy.id) trackJob(busy);
}

async function pollStatus() {
  try {
    renderStatus(await api("GET", "/status"));
    setConn(true, "connected");
  } catch (error) {
    setConn(false, error.status === 401 ? "API key needed to read" : "disconnected");
  } finally {
    drawTrace();
    setTimeout(pollStatus, STATUS_PERIOD_MS);
  }
}

function showEstimate(e) {
  $("est-defocus").textContent = e.defocus_um === null ? "blank" : `${signed(e.defocus_um, 2)} µm`;
  $("est-conf").textContent = fmt(e.confidence, 2);
  const model = { near: " (near-focus model)", far: " (far-defocus model)" }[e.model] || "";
  $("est-tiles").textContent = e.tiles_used !== undefined ? `${e.tiles_used} / ${e.tiles_total}${model}` : "–";
  pushPoint("est", e.defocus_um);
}

async function pollEstimate() {
  const idle = ui.status && !ui.status.busy_job;
  if ($("live-estimate").checked && idle && !ui.estimating && document.visibilityState === "visible") {
    ui.estimating = true;
    try {
      const e = await api("GET", "/estimate");
      showEstimate(e);
      if (Number.isFinite(e.defocus_um)) {
        ui.liveEstimates.push({ z: e.z_um, v: e.defocus_um });
        if (ui.liveEstimates.length > OFFSET_FRAMES) ui.liveEstimates.shift();
      }
      ui.regionMap = e.region_map;
      drawOverlay();
    } catch (error) {
      if (error.status !== 409) console.warn("estimate:", error.message);
    } finally {
      ui.estimating = false;
    }
  }
  setTimeout(pollEstimate, ESTIMATE_PERIOD_MS);
}

/* ---------------------------------------------------------------- jobs ------------- */
function setJobUi(kind, running, text) {
  if (kind === "focus-lock") {
    $("lock-text").textContent = text;
    return;
  }
  $("job-badge").textContent = running ? "running" : "idle";
  $("job-badge").className = `badge ${running ? "run" : ""}`;
  $("job-progress").className = `progress-fill ${running ? "indeterminate" : ""}`;
  $("job-progress").style.width = running ? "" : "0";
  $("job-text").textContent = text;
}

function describeProgress(p) {
  switch (p.event) {
    case "start": return `started at Z ${fmt(p.start_z_um, 2)} µm`;
    case "estimate": return `estimate ${signed(p.defocus_um)} µm (confidence ${fmt(p.confidence)}) at Z ${fmt(p.z_um)} µm`;
    case "move": return `moved to Z ${fmt(p.read_back_z_um, 2)} µm (${p.reason})`;
    case "score": return `sharpness ${p.score.toPrecision(3)} at Z ${fmt(p.z_um, 2)} µm`;
    case "plane": return `calibration plane ${p.planes_done}/${p.planes_total}: reads ${signed(p.reading_um)} µm at ${signed(p.defocus_um)} µm`;
    default: return p.event || "working…";
  }
}

function showResult(job) {
  const dl = $("af-result");
  dl.textContent = "";
  const r = job.result || {};
  const rows = [
    ["Outcome", r.outcome || job.status],
    ["Final Z", r.final_z_um !== undefined ? `${fmt(r.final_z_um, 2)} µm` : "–"],
    ["Estimate", r.estimate_um !== undefined && r.estimate_um !== null ? `${signed(r.estimate_um)} µm` : "–"],
    ["Frames", r.frames_used ?? "–"],
    ["Duration", r.duration_s !== undefined ? `${fmt(r.duration_s, 2)} s` : "–"],
  ];
  if (r.simulated_truth_defocus_um !== undefined) rows.push(["Truth after (sim)", `${signed(r.simulated_truth_defocus_um)} µm`]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
}

function jobFinished(job) {
  ui.trackedJob = null;
  if (ui.events) ui.events.close();
  ui.events = null;
  if (job.kind === "focus-lock") {
    const why = job.status === "failed" && job.error ? `: ${job.error.detail}` : "";
    setJobUi(job.kind, false, `Focus lock ended (${job.status})${why}`);
    if (job.status === "failed") toast("Focus lock failed", job.error ? job.error.detail : "", "bad");
  } else if (job.kind === "calibration") {
    setJobUi(job.kind, false, `calibration ${job.status}${job.error ? ": " + job.error.detail : ""}`);
    if (job.status === "succeeded") {
      ui.suggestedAim = job.result.suggested_aim_um;
      renderCalibration(job.result.summary);
      toast("Calibrated", `the model reads ${signed(job.result.summary.reading_at_focus_um)} µm at this focus`, "ok");
    } else if (job.status === "failed") {
      toast("Calibration failed", job.error ? job.error.detail : "", "bad");
    }
  } else {
    const message = job.error ? job.error.detail : (job.result && job.result.message) || "";
    setJobUi(job.kind, false, `${job.kind} ${job.status}${message ? ": " + message : ""}`);
    showResult(job);
    if (job.status === "failed") toast("Autofocus failed", job.error ? job.error.detail : "", "bad");
    else if (job.status === "succeeded") toast("Autofocus done", `Z = ${fmt(job.result.final_z_um, 2)} µm`, "ok");
  }
  loadRuns();
  pollStatusOnce();
}

async function pollStatusOnce() {
  try { renderStatus(await api("GET", "/status")); } catch (error) { /* the periodic poll reports it */ }
}

function trackJob(job) {
  if (ui.events) ui.events.close();
  ui.trackedJob = job.id;
  setJobUi(job.kind, true, job.kind === "focus-lock" ? "Focus lock running…" : `${job.params.routine || job.kind} running…`);
  const es = new EventSource(`/jobs/${job.id}/events${keyQuery()}`);
  ui.events = es;
  es.addEventListener("progress", (message) => {
    const p = JSON.parse(message.data);
    if (job.kind === "focus-lock" && p.event === "warning") {  // the Z it holds does not look focused
      toast("Focus lock: check the focus", p.message, "bad");
      return;
    }
    if (job.kind === "focus-lock" && p.event === "plane") {  // "hold this focus" measures the field first
      setJobUi(job.kind, true, `measuring this field: plane ${p.planes_done}/${p.planes_total}, reads ${signed(p.reading_um)} µm at ${signed(p.defocus_um)} µm`);
      return;
    }
    if (job.kind === "focus-lock") {
      pushPoint("est", p.defocus_um);
      pushPoint("z", p.z_um);
      showEstimate(p);
      const off = p.focus_error_um === null ? "" : ` (${signed(p.focus_error_um)} µm from the held focus)`;
      setJobUi(job.kind, true, `state ${p.state}: reads ${signed(p.defocus_um)} µm${off}, correction ${signed(p.correction_um)} µm`);
      return;
    }
    if (p.event === "estimate") {
      showEstimate(p);
      pushPoint("z", p.z_um);
    } else if (p.event === "move") {
      pushPoint("z", p.read_back_z_um);
    } else if (p.event === "score") {
      pushPoint("z", p.z_um);
    }
    setJobUi(job.kind, true, describeProgress(p));
  });
  es.addEventListener("done", (message) => jobFinished(JSON.parse(message.data)));
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED && ui.trackedJob === job.id) {
      ui.trackedJob = null;
      api("GET", `/jobs/${job.id}`).then((j) => (j.status === "running" ? trackJob(j) : jobFinished(j))).catch(() => {});
    }
  };
}

/* The focus offset: routines and the lock end where the model reads this value (0: its focal plane). */
function focusOffset() {
  return numberIn("focus-offset");
}

/* The first move's aim (one-shot, hybrid): 0 goes straight for focus. */
function aim() {
  return numberIn("aim");
}

/* The number in an <input>, 0 when it holds none. */
function numberIn(id) {
  const value = Number($(id).value);
  return Number.isFinite(value) ? value : 0;
}

/* The stored calibration holds the focus, so the offset box is off while one is in use. When one comes
   into use (stored from this page or another client, or found at load) and the aim box holds 0, the box
   takes the aim measured best with a calibration; an aim the operator chose stays. */
function renderCalibration(summary) {
  const appeared = Boolean(summary) && !ui.calibration;
  ui.calibration = summary;
  if (appeared && aim() === 0 && ui.suggestedAim !== null) $("aim").value = String(ui.suggestedAim);
  $("cal-drop").hidden = !summary;
  $("focus-offset").disabled = Boolean(summary);
  $("focus-offset").title = summary ? "the calibration holds the focus; drop it to use an offset" : "";
  $("cal-text").textContent = summary
    ? `Calibrated: reads ${signed(summary.reading_at_focus_um)} µm at focus, ${fmt(summary.z_range_um[0], 1)}…${fmt(summary.z_range_um[1], 1)} µm, ${summary.fields} field(s)` +
      (summary.tilt_um_per_mm ? `, slide tilt ${signed(summary.tilt_um_per_mm[0])} / ${signed(summary.tilt_um_per_mm[1])} µm per mm (X / Y)` : "") +
      (summary.brightness_correction ? ", corrected for each field's brightness" : "")
    : "No calibration.";
}

async function loadCalibration() {
  try {
    const stored = await api("GET", "/calibration");
    ui.suggestedAim = stored.suggested_aim_um;
    renderCalibration(stored.summary);
  } catch (error) {
    console.warn("calibration:", error.message);
  }
}

async function measureCalibration() {
  try {
    trackJob(await api("POST", "/calibration/measure", {}));
  } catch (error) {
    failed("Calibration", error);
  }
}

async function dropCalibration() {
  try {
    renderCalibration((await api("DELETE", "/calibration")).summary);
    $("aim").value = "0";  // the suggested aim was measured with a calibration only
    toast("Calibration dropped", "runs use the focus offset again", "ok");
  } catch (error) {
    failed("Dropping the calibration", error);
  }
}

/* Focused by eye? Take the median of the live estimates at this Z as the offset (autofocus offset). */
function setOffsetFromEstimates() {
  const z = ui.status && ui.status.stage ? ui.status.stage.z_um : null;
  const here = ui.liveEstimates.filter((e) => z !== null && Math.abs(e.z - z) < 0.01).map((e) => e.v);
  if (here.length === 0) {
    toast("No live estimate at this Z yet", "turn on the live estimate and wait a few seconds", "bad");
    return;
  }
  const sorted = [...here].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  $("focus-offset").value = median.toFixed(2);
  toast("Focus offset set", `${signed(median)} µm, the median of ${here.length} live estimates at Z ${fmt(z)} µm`, "ok");
}

async function startAutofocus(routine) {
  try {
    const offset = ui.calibration ? 0 : focusOffset();
    const job = await api("POST", "/autofocus", { routine, options: { focus_offset_um: offset, aim_um: routine === "zscan" ? 0 : aim() } });
    $("af-result").textContent = "";
    trackJob(job);
  } catch (error) {
    failed(`Autofocus (${routine})`, error);
  }
}

/* ---------------------------------------------------------------- stage ------------ */
async function move(body, what) {
  try {
    const stage = await api("POST", "/stage/z", body);
    $("z-value").textContent = fmt(stage.z_um, 2);
    pushPoint("z", stage.z_um);
  } catch (error) {
    failed(what, error);
  }
}

async function stop() {
  try {
    const r = await api("POST", "/stage/stop");
    toast("Stopped", `Z = ${fmt(r.z_um, 2)} µm${r.cancelled_job_id ? `, job ${r.cancelled_job_id} cancelled` : ""}`, "ok");
  } catch (error) {
    failed("STOP", error);
  }
}

async function setFocusLock(on) {
  try {
    if (on) {
      const interval = Math.max(0.5, Number($("lock-interval").value) || 2);
      const body = $("lock-here").checked
        ? { options: { interval_s: interval, integral_gain: LOCK_INTEGRAL_GAIN }, calibrate_range_um: LOCK_CURVE_RANGE_UM }
        : { options: { interval_s: interval, focus_offset_um: ui.calibration ? 0 : focusOffset() } };
      const job = await api("POST", "/focus-lock", body);
      trackJob(job);
    } else {
      await api("DELETE", "/focus-lock");
    }
  } catch (error) {
    $("lock-toggle").checked = !on;
    failed(on ? "Focus lock" : "Stopping the focus lock", error);
  }
}

/* ---------------------------------------------------------------- runs ------------- */
async function loadRuns() {
  try {
    const page = await api("GET", "/runs?limit=8");
    const body = $("runs-body");
    body.textContent = "";
    if (!page.items.length) {
      body.innerHTML = '<tr><td colspan="8" class="empty">No runs yet.</td></tr>';
      return;
    }
    for (const run of page.items) {
      const tr = document.createElement("tr");
      const cells = [
        new Date(run.time).toLocaleTimeString(),
        run.routine,
        run.outcome,
        fmt(run.start_z_um, 2),
        run.estimate_um === null ? "–" : signed(run.estimate_um),
        fmt(run.final_z_um, 2),
        run.frames_used ?? "–",
        run.duration_s === null ? "–" : `${fmt(run.duration_s, 2)} s`,
      ];
      cells.forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = String(value);
        if (i === 2) td.className = `outcome ${run.outcome}`;
        if (i >= 3) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  } catch (error) {
    console.warn("runs:", error.message);
  }
}

/* ---------------------------------------------------------------- wiring ----------- */
function init() {
  initKey();
  for (const button of document.querySelectorAll("[data-routine]")) {
    button.addEventListener("click", () => startAutofocus(button.dataset.routine));
  }
  const step = () => Number($("step-size").value);
  $("step-up").addEventListener("click", () => move({ dz_um: step() }, "Step up"));
  $("step-down").addEventListener("click", () => move({ dz_um: -step() }, "Step down"));
  $("goto-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const z = Number($("goto-z").value);
    if ($("goto-z").value !== "" && Number.isFinite(z)) move({ z_um: z }, "Go to");
  });
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") stop();
  });
  $("lock-toggle").addEventListener("change", (event) => setFocusLock(event.target.checked));
  $("runs-refresh").addEventListener("click", loadRuns);
  $("offset-here").addEventListener("click", setOffsetFromEstimates);
  $("cal-measure").addEventListener("click", measureCalibration);
  $("cal-drop").addEventListener("click", dropCalibration);
  $("show-map").addEventListener("change", drawOverlay);
  window.addEventListener("resize", () => { drawOverlay(); drawTrace(); });
  startLiveView();
  loadCalibration().finally(pollStatus);  // the suggested aim is known before /status shows a calibration
  pollEstimate();
  loadRuns();
}

document.addEventListener("DOMContentLoaded", init);
