"use strict";
let TOKEN = new URLSearchParams(location.search).get("token") || "";
let MODELS = [], RESULT = null, VIEW = null;
const $ = (id) => document.getElementById(id);
const COLORS = [[0,0,0],[255,64,64],[64,200,64],[64,128,255],[255,200,0],[200,64,255]];

function headers() { return TOKEN ? {Authorization: "Bearer " + TOKEN} : {}; }
async function api(path, opts = {}) {
  opts.headers = Object.assign({}, opts.headers || {}, headers());
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({detail: r.statusText}));
  if (!r.ok) throw new Error(r.status + ": " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)));
  return body;
}
function b64bytes(s) { const bin = atob(s); const a = new Uint8Array(bin.length); for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i); return a; }

async function loadModels() {
  try { MODELS = await api("/api/models"); } catch (e) { $("auth").hidden = false; $("seg-error").textContent = e.message; return; }
  $("auth").hidden = !TOKEN;
  for (const [sel, tasks] of [["seg-model", ["segmentation", "instance"]], ["out-model", ["outcome", "survival"]]]) {
    $(sel).innerHTML = "";
    for (const m of MODELS.filter((m) => tasks.includes(m.task))) {
      const o = document.createElement("option"); o.value = o.textContent = m.name; o.selected = !!m.default;
      $(sel).appendChild(o);
    }
  }
  showCard(); ehrFields();
}
function model(name) { return MODELS.find((m) => m.name === name); }
// The card as readable fields (the server's card_fields: intended use, data, licence, metrics with their split...).
function cardList(box, m, none) {
  box.innerHTML = "";
  box.hidden = !m && !none;
  if (!m) { box.textContent = none; return; }
  for (const f of m.card_fields || []) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = f.label; dd.textContent = f.value;
    dd.dataset.field = f.label; box.appendChild(dt); box.appendChild(dd);
  }
}
function showCard() { cardList($("card"), model($("seg-model").value), "no segmentation model served"); }

async function segment(ev) {
  ev.preventDefault();
  $("seg-error").textContent = "";
  const fd = new FormData();
  fd.append("model", $("seg-model").value);
  if ($("file").files.length) fd.append("file", $("file").files[0]);
  else if ($("sample").value !== "") fd.append("sample", $("sample").value);
  if ($("reference").files.length) fd.append("reference", $("reference").files[0]);
  fd.append("tta", $("tta").checked ? "true" : "false");
  $("seg-run").disabled = true;
  try { RESULT = await api("/api/segment", {method: "POST", body: fd}); show(); }
  catch (e) { $("seg-error").textContent = e.message; }
  finally { $("seg-run").disabled = false; }
}

function show() {
  const d = RESULT.display;
  const raw = b64bytes(d.image_u16);
  VIEW = {d, image: new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2), labels: b64bytes(d.labels_u8),
          cam: d.gradcam_u8 ? b64bytes(d.gradcam_u8) : null, entropy: d.entropy_u8 ? b64bytes(d.entropy_u8) : null};
  let best = 0, bestCount = -1; const hw = d.height * d.width;
  for (let z = 0; z < d.depth; z++) { let c = 0; for (let i = 0; i < hw; i++) if (VIEW.labels[z * hw + i]) c++; if (c > bestCount) { best = z; bestCount = c; } }
  $("slice").max = d.depth - 1; $("slice").value = best;
  $("cam-note").textContent = d.gradcam_note || "";
  $("show-cam").disabled = !VIEW.cam;
  $("show-entropy").disabled = !VIEW.entropy;
  $("entropy-note").textContent = VIEW.entropy ? d.entropy_note || "" : "no uncertainty map";
  const view = $("view"); view.width = d.width; view.height = d.height;
  const rows = [["class", RESULT.unit === "mL" ? "volume (mL)" : "area (mm²)", "Dice"]];
  for (const [k, v] of Object.entries(RESULT.sizes)) rows.push([k, v.toFixed(2), RESULT.dice ? (RESULT.dice[k] == null ? "n/a" : RESULT.dice[k].toFixed(3)) : "-"]);
  $("results").innerHTML = rows.map((r, i) => "<tr>" + r.map((c) => i ? `<td>${c}</td>` : `<th>${c}</th>`).join("") + "</tr>").join("");
  $("downloads").innerHTML = "";
  for (const [key, f] of Object.entries(RESULT.downloads)) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([b64bytes(f.base64)])); a.download = f.filename; a.textContent = "download " + f.filename;
    a.id = "dl-" + key; $("downloads").appendChild(a); $("downloads").appendChild(document.createElement("br"));
  }
  draw();
}

function draw() {
  if (!VIEW) return;
  const d = VIEW.d, z = +$("slice").value, hw = d.height * d.width;
  $("slice-label").textContent = `${z + 1}/${d.depth}`;
  const win = +$("window").value / 100 * 65535, lev = +$("level").value / 100 * 65535;
  const lo = lev - win / 2, ctx = $("view").getContext("2d"), img = ctx.createImageData(d.width, d.height);
  const labels = $("show-labels").checked, cam = $("show-cam").checked && VIEW.cam;
  const entropy = $("show-entropy").checked && VIEW.entropy;
  for (let i = 0; i < hw; i++) {
    let g = Math.max(0, Math.min(255, (VIEW.image[z * hw + i] - lo) / Math.max(win, 1) * 255));
    let r = g, gg = g, b = g;
    const k = VIEW.labels[z * hw + i];
    if (labels && k) { const c = COLORS[k % COLORS.length]; r = 0.5 * r + 0.5 * c[0]; gg = 0.5 * gg + 0.5 * c[1]; b = 0.5 * b + 0.5 * c[2]; }
    if (cam) { const h = VIEW.cam[z * hw + i] / 255; r = (1 - h * 0.6) * r + h * 0.6 * 255; b = (1 - h * 0.6) * b; }
    if (entropy) {  // uncertainty: towards yellow where the entropy is high
      const h = 0.65 * VIEW.entropy[z * hw + i] / 255;  // the anatomy stays visible under the overlay
      r = (1 - h) * r + h * 255; gg = (1 - h) * gg + h * 230; b = (1 - h) * b;
    }
    img.data.set([r, gg, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  $("view").dataset.drawn = String(z);
  $("view").dataset.entropy = entropy ? "on" : "off";
}

function ehrFields() {
  const m = model($("out-model").value), box = $("ehr-fields");
  cardList($("out-card"), m, "");
  box.innerHTML = "";
  if (!m) { box.textContent = "no outcome model served"; $("ehr-run").disabled = true; return; }
  $("ehr-run").disabled = false;
  let html = "";
  if (m.ehr_form) {
    html += `<label>Age <input id="f-age" type="number" value="62" min="18" max="90"></label>`;
    html += `<label>Sex <select id="f-sex"><option>F</option><option>M</option></select></label>`;
    for (const c of ["diabetes", "hypertension", "cardiac_disease", "smoker"]) html += `<label><input id="f-${c}" type="checkbox"> ${c}</label>`;
  } else {
    m.covariate_names.forEach((c, i) => {
      const v = m.covariate_defaults ? +m.covariate_defaults[i].toPrecision(4) : 0;
      html += `<label>${esc(c)} <input id="f-${esc(c)}" type="number" value="${v}" step="any"></label>`;
    });
  }
  if (m.task === "survival") html += `<label>horizon (${esc(m.time_unit || "time")}) <input id="f-horizon" type="number" min="0" step="any" placeholder="default"></label>`;
  if (m.channel_names.length) html += `<label>image: phantom sample <input id="f-sample" type="number" value="0" min="0" max="63"></label>`;
  box.innerHTML = html;
  $("ehr-run").textContent = m.task === "survival" ? "Predict survival" : "Predict risk";
  $("surv").hidden = true;
}
function esc(s) { return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]); }

// The survival curve S(t) as an SVG step/line plot (with the interval band when the model gives one).
function drawSurvival(c) {
  const W = 420, H = 220, L = 44, R = 10, T = 10, B = 34, svg = $("surv-plot");
  const tmax = c.times[c.times.length - 1] || 1;
  const x = (t) => L + (W - L - R) * t / tmax, y = (s) => T + (H - T - B) * (1 - s);
  const line = (ys) => ys.map((s, i) => `${i ? "L" : "M"}${x(c.times[i]).toFixed(1)},${y(s).toFixed(1)}`).join("");
  let g = `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#999"/>`;
  for (const s of [0, 0.25, 0.5, 0.75, 1]) g += `<line x1="${L - 4}" x2="${L}" y1="${y(s)}" y2="${y(s)}" stroke="#999"/><text x="${L - 6}" y="${y(s) + 4}" font-size="10" text-anchor="end">${s}</text>`;
  for (let k = 0; k <= 4; k++) { const t = tmax * k / 4; g += `<text x="${x(t)}" y="${H - B + 14}" font-size="10" text-anchor="middle">${Math.round(t)}</text>`; }
  g += `<text x="${(L + W - R) / 2}" y="${H - 4}" font-size="11" text-anchor="middle">time (${esc(c.time_unit || "?")})</text>`;
  g += `<text x="12" y="${(T + H - B) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 ${(T + H - B) / 2})">S(t)</text>`;
  const band = (lo, up, id, colour) => {
    const d = line(up) + lo.map((s, i) => `L${x(c.times[i]).toFixed(1)},${y(s).toFixed(1)}`).reverse().join("") + "Z";
    return `<path id="${id}" d="${d}" fill="${colour}" fill-opacity="0.35" stroke="none"/>`;
  };
  if (c.ci_lower && c.ci_upper) g += band(c.ci_lower, c.ci_upper, "surv-ci", "#f5b041");  // the interval
  if (c.lower && c.upper) g += band(c.lower, c.upper, "surv-band", "#9bd");  // the mirrored-image range
  g += `<line x1="${x(c.horizon)}" x2="${x(c.horizon)}" y1="${T}" y2="${H - B}" stroke="#d44" stroke-dasharray="3,3"/>`;
  g += `<path id="surv-line" d="${line(c.survival)}" fill="none" stroke="#226" stroke-width="2"/>`;
  svg.innerHTML = g;
  svg.dataset.points = String(c.times.length);
  const med = c.median_time == null ? `not reached by ${Math.round(tmax)}` : Math.round(c.median_time);
  $("surv-note").textContent = `S(${c.horizon}) = ${(100 * c.survival_at_horizon).toFixed(1)}%; median survival: ${med} ${c.time_unit}; ${c.ci_note}; ${c.interval_note}`;
  $("surv").hidden = false;
}

async function predictRisk(ev) {
  ev.preventDefault();
  $("ehr-error").textContent = ""; $("risk").textContent = "";
  const m = model($("out-model").value), fields = {};
  if (m.ehr_form) {
    fields.age = +$("f-age").value; fields.sex = $("f-sex").value;
    for (const c of ["diabetes", "hypertension", "cardiac_disease", "smoker"]) fields[c] = $("f-" + c).checked ? 1 : 0;
  } else for (const c of m.covariate_names) fields[c] = +$("f-" + c).value;
  const req = {model: m.name, fields, sample: $("f-sample") ? +$("f-sample").value : 0};
  if ($("f-horizon") && $("f-horizon").value !== "") req.horizon = +$("f-horizon").value;
  $("surv").hidden = true;
  try {
    const r = await api("/api/outcome", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(req)});
    const pct = (v) => (100 * v).toFixed(1);
    const range = r.risk_range ? ` (range ${pct(r.risk_range[0])}–${pct(r.risk_range[1])}%)` : "";
    const iv = r.interval ? `<span id="risk-interval">${Math.round(100 * r.interval.level)}% interval ${pct(r.interval.lower)}–${pct(r.interval.upper)}%</span>`
      : `<span id="risk-interval">no interval</span>`;
    $("risk").innerHTML = `<b id="risk-value">risk ${pct(r.risk)}%</b>, ${iv}${range}: ${esc(r.risk_range_note)}` +
      `<div class="note" id="interval-note">${esc(r.interval_note)}</div>`;
    if (r.survival) drawSurvival(r.survival);
    const rows = r.shap ? Object.entries(r.shap.values).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])) : [];
    $("shap").innerHTML = "<tr><th>field</th><th>SHAP (risk)</th></tr>" + rows.map(([k, v]) =>
      `<tr><td>${k}</td><td>${v >= 0 ? "+" : ""}${v.toFixed(4)}</td><td><div style="background:${v >= 0 ? "#d44" : "#44d"};height:8px;width:${Math.min(200, Math.abs(v) * 2000)}px"></div></td></tr>`).join("");
  } catch (e) { $("ehr-error").textContent = e.message; }
}

$("token-set").onclick = () => { TOKEN = $("token").value; loadModels(); };
$("seg-model").onchange = showCard;
$("out-model").onchange = ehrFields;
$("seg-form").onsubmit = segment;
$("ehr-form").onsubmit = predictRisk;
for (const id of ["slice", "window", "level", "show-labels", "show-cam", "show-entropy"]) $(id).oninput = draw;
$("show-cam").onchange = draw; $("show-labels").onchange = draw; $("show-entropy").onchange = draw;
loadModels();
