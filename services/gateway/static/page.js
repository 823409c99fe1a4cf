// The "Select background image" page for one OB: the list on the left, the
// selected image in Aladin Lite on the right, an Upload button, trash icons.
// Strings users wrote (file names, OBJECT) only ever go through textContent.
import A from "/vendor/aladin-lite/aladin.js";

const $ = (id) => document.getElementById(id);
const API = "/api/v1";
const state = { ctx: null, listing: null, aladin: null, markers: null, busy: false };
window.bgPage = state; // for people debugging in the console, and the browser test

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && key !== "type") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function problemText(problem, fallback) {
  if (!problem || typeof problem !== "object") return fallback;
  const lines = [`${problem.title || "Error"} (${problem.code || problem.status}): ${problem.detail || ""}`];
  for (const finding of problem.errors || []) {
    const hdu = finding.hdu !== undefined ? `HDU ${finding.hdu}: ` : "";
    lines.push(`• ${hdu}${finding.message}`);
  }
  return lines.join("\n");
}

// ---- context ------------------------------------------------------------------------------------

function readContext() {
  const ctx = {
    token: $("ctx-token").value.trim(),
    ob: $("ctx-ob").value.trim(),
    run: $("ctx-run").value.trim(),
    ra: $("ctx-ra").value.trim(),
    dec: $("ctx-dec").value.trim(),
    boaRa: $("ctx-boa-ra").value.trim(),
    boaDec: $("ctx-boa-dec").value.trim(),
  };
  sessionStorage.setItem("bg-context", JSON.stringify({ ...ctx, token: undefined }));
  sessionStorage.setItem("bg-token", ctx.token);
  return ctx;
}

function restoreContext() {
  const saved = JSON.parse(sessionStorage.getItem("bg-context") || "{}");
  const hash = new URLSearchParams(location.hash.slice(1));
  const pick = (key, savedKey) => hash.get(key) ?? saved[savedKey] ?? "";
  $("ctx-ob").value = pick("ob", "ob");
  $("ctx-run").value = pick("run", "run");
  $("ctx-ra").value = pick("ra", "ra");
  $("ctx-dec").value = pick("dec", "dec");
  $("ctx-boa-ra").value = pick("boa_ra", "boaRa");
  $("ctx-boa-dec").value = pick("boa_dec", "boaDec");
  $("ctx-token").value = sessionStorage.getItem("bg-token") || "";
}

function obParams(ctx) {
  const params = new URLSearchParams({ run_id: ctx.run, target_ra: ctx.ra, target_dec: ctx.dec });
  if (ctx.boaRa && ctx.boaDec) {
    params.set("boa_ra", ctx.boaRa);
    params.set("boa_dec", ctx.boaDec);
  }
  return params;
}

async function api(method, path, { params, json } = {}) {
  const ctx = state.ctx;
  const url = path + (params ? `?${params}` : "");
  const headers = { Authorization: `Bearer ${ctx.token}`, Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const resp = await fetch(url, { method, headers, body });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new Error(problemText(data, `${resp.status} ${resp.statusText}`));
    err.problem = data;
    throw err;
  }
  return data;
}

// ---- the list -----------------------------------------------------------------------------------

function formatDate(iso) {
  return iso ? iso.slice(0, 10) : "recently";
}

function choice(selection, labelParts, { checked = false, trash = null, dataset = {} } = {}) {
  const id = `choice-${Math.random().toString(36).slice(2)}`;
  const radio = el("input", { type: "radio", name: "background", id, value: selection, checked });
  radio.addEventListener("change", () => radio.checked && select(selection));
  const label = el("label", { htmlFor: id }, ...labelParts);
  const row = el("div", { className: "choice", dataset: { selection, ...dataset } }, radio, label);
  if (trash) row.append(trash);
  return row;
}

function trashIcon() {
  // Drawn, not a font glyph: kiosks and headless browsers may lack emoji fonts.
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("fill-rule", "evenodd");
  path.setAttribute("d", "M9 2h6l1 2h4v2H4V4h4zM6 8h12l-1 14H7zm3 2v10h2V10zm4 0v10h2V10z");
  svg.append(path);
  return svg;
}

function imageRow(image, selected, own) {
  const meta = [image.filter && `filter ${image.filter}`, image.object_name, !own && `shared by ${image.owner_id}`]
    .filter(Boolean)
    .join(" · ");
  const parts = [el("span", { className: "name" }, image.file_name)];
  if (meta) parts.push(el("span", { className: "meta" }, meta));
  let trash = null;
  if (own) {
    trash = el("button", { type: "button", className: "trash", title: "Delete this image" }, trashIcon());
    trash.setAttribute("aria-label", `Delete ${image.file_name}`);
    trash.addEventListener("click", () => removeImage(image));
  }
  return choice(image.selection, parts, {
    checked: selected === image.selection,
    trash,
    dataset: { fitsHash: image.fits_hash, own: own ? "yes" : "no" },
  });
}

function group(title, rows, emptyText) {
  const box = el("div", { className: "group" }, el("h2", {}, title));
  if (rows.length) box.append(...rows);
  else if (emptyText) box.append(el("p", { className: "empty" }, emptyText));
  return box;
}

function renderList(listing) {
  const selected = listing.selected.selection;
  const groups = [
    group("Default survey", [
      choice("default", [el("span", { className: "name" }, listing.default_survey.name)], {
        checked: selected === "default",
      }),
    ]),
  ];
  if (!["default", "user_image"].includes(listing.selected.kind)) {
    groups.push(group("Other", [choice(selected, [el("span", { className: "name" }, selected)], { checked: true })]));
  }
  groups.push(group("My images", listing.own.map((i) => imageRow(i, selected, true)), "No image of yours fits this OB."));
  groups.push(group("Shared images", listing.shared.map((i) => imageRow(i, selected, false)), "None."));
  if (listing.tombstones.length) {
    const rows = listing.tombstones.map((t) => {
      const verb = t.reason === "culled" ? "culled" : "deleted";
      const radio = el("input", { type: "radio", name: "background", disabled: true });
      const label = el(
        "label",
        {},
        el("span", { className: "name" }, t.file_name),
        el("span", { className: "meta" }, `${verb} on ${formatDate(t.removed_at)}, please upload again`),
      );
      return el("div", { className: "choice tombstone", dataset: { fitsHash: t.fits_hash } }, radio, label);
    });
    groups.push(group("Removed lately", rows));
  }
  $("choices").replaceChildren(...groups);
  document.body.dataset.selected = selected;
}

async function refresh() {
  const ctx = state.ctx;
  const listing = await api("GET", `${API}/obs/${encodeURIComponent(ctx.ob)}/background-images`, {
    params: obParams(ctx),
  });
  state.listing = listing;
  renderList(listing);
  await display(listing.selected);
  return listing;
}

async function select(selection) {
  if (state.busy) return;
  const ctx = state.ctx;
  setStatus("");
  try {
    const params = Object.fromEntries(obParams(ctx));
    const json = { ...params, selection };
    await api("PUT", `${API}/obs/${encodeURIComponent(ctx.ob)}/background-image`, { json });
    await refresh();
  } catch (err) {
    setStatus(err.message, true);
    await refresh().catch(() => {});
  }
}

async function removeImage(image) {
  if (!confirm(`Delete ${image.file_name}? OBs using it fall back to the default survey.`)) return;
  try {
    await api("DELETE", `${API}/images/${image.fits_hash}`);
    setStatus(`Deleted ${image.file_name}.`);
    await refresh();
  } catch (err) {
    setStatus(err.message, true);
  }
}

// ---- upload -------------------------------------------------------------------------------------

function setUploading(on) {
  state.busy = on;
  document.querySelector("#upload-button .spinner").hidden = !on;
  $("upload-text").textContent = on ? "Uploading…" : "Upload";
  $("upload-button").setAttribute("aria-busy", on ? "true" : "false");
  $("upload-progress").hidden = !on;
  $("upload-input").disabled = on;
}

function upload(file) {
  const ctx = state.ctx;
  const form = new FormData();
  for (const [key, value] of obParams(ctx)) form.append(key, value);
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `${API}/obs/${encodeURIComponent(ctx.ob)}/background-images`);
  xhr.setRequestHeader("Authorization", `Bearer ${ctx.token}`);
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (ev) => {
    if (ev.lengthComputable) $("upload-progress").value = Math.round((100 * ev.loaded) / ev.total);
  });
  setUploading(true);
  setStatus(`Uploading ${file.name}…`);
  return new Promise((resolve) => {
    xhr.addEventListener("loadend", async () => {
      setUploading(false);
      if (xhr.status === 201) {
        setStatus(`Uploaded ${file.name}; it is now the selected background.`);
        await refresh().catch((err) => setStatus(err.message, true));
      } else if (xhr.status === 0) {
        setStatus("The upload was interrupted (network error).", true);
      } else {
        setStatus(problemText(xhr.response, `Upload failed: ${xhr.status}`), true);
      }
      $("upload-input").value = "";
      resolve();
    });
    xhr.send(form);
  });
}

// ---- display ------------------------------------------------------------------------------------

function absolute(url) {
  return new URL(url, location.href).href;
}

function footprintFov(image) {
  let max = 0;
  for (const fp of image.footprints || []) {
    for (const a of fp.corners) {
      for (const b of fp.corners) {
        const dDec = a[1] - b[1];
        const dRa = (a[0] - b[0]) * Math.cos((a[1] * Math.PI) / 180);
        max = Math.max(max, Math.hypot(dRa, dDec));
      }
    }
  }
  return max > 0 ? Math.min(max * 1.3, 60) : 0.5;
}

function markOb(ctx) {
  const aladin = state.aladin;
  if (state.markers) state.markers.removeAll();
  else {
    state.markers = A.catalog({ name: "OB", sourceSize: 22, color: "#ff3b3b", shape: "cross" });
    aladin.addCatalog(state.markers);
  }
  const sources = [A.source(Number(ctx.ra), Number(ctx.dec), { name: "Target" })];
  if (ctx.boaRa && ctx.boaDec) sources.push(A.source(Number(ctx.boaRa), Number(ctx.boaDec), { name: "BOA star" }));
  state.markers.addSources(sources);
}

async function display(selection) {
  const ctx = state.ctx;
  const caption = $("display-caption");
  document.body.dataset.display = "loading";
  if (!state.aladin) {
    await A.init;
    state.aladin = A.aladin("#aladin", {
      target: `${ctx.ra} ${ctx.dec}`,
      // Aladin's own default (DSS2 from CDS) would be looked up on the internet.
      survey: absolute(state.listing.default_survey.hips_url),
      fov: 0.5,
      cooFrame: "ICRS",
      hipsList: [],
      log: false,
      showReticle: false,
      showLayersControl: false,
      showGotoControl: false,
      showSettingsControl: false,
      showShareControl: false,
      showProjectionControl: false,
      showFullscreenControl: false,
      showSimbadPointerControl: false,
      showCooGridControl: false,
      showContextMenu: false,
    });
  }
  const aladin = state.aladin;
  aladin.gotoRaDec(Number(ctx.ra), Number(ctx.dec));
  let layer;
  if (selection.kind === "user_image" && selection.image) {
    const image = selection.image;
    const hips = await api("GET", `${API}/images/${image.fits_hash}/hips`, {
      params: new URLSearchParams({ ob_id: ctx.ob }),
    });
    // Aladin Lite renders layer names as HTML: never hand it user text.
    layer = A.imageHiPS(hips.hips_url, { name: `user image ${image.fits_hash.slice(0, 12)}` });
    aladin.setFoV(footprintFov(image));
    caption.textContent = `${image.file_name}${image.filter ? ` (filter ${image.filter})` : ""}`;
  } else {
    const survey = state.listing.default_survey;
    layer = A.imageHiPS(absolute(survey.hips_url), { name: survey.name });
    caption.textContent =
      selection.kind === "default" ? survey.name : `${selection.selection} (shown over the default survey)`;
  }
  aladin.setBaseImageLayer(layer);
  markOb(ctx);
  document.body.dataset.display = selection.selection;
}

// ---- start --------------------------------------------------------------------------------------

async function load(ev) {
  if (ev) ev.preventDefault();
  state.ctx = readContext();
  setStatus("Loading…");
  try {
    await refresh();
    setStatus("");
    $("upload-input").disabled = false;
    $("upload-button").setAttribute("aria-disabled", "false");
  } catch (err) {
    setStatus(err.message, true);
  }
}

restoreContext();
$("context").addEventListener("submit", load);
$("upload-input").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (file && state.ctx && !state.busy) upload(file);
});
document.body.dataset.ready = "yes";
