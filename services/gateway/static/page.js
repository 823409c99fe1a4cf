// The "Select background image" page for one OB: the list on the left, the
// selected image in Aladin Lite on the right, an Upload button, trash icons.
// Strings users wrote (file names, OBJECT) only ever go through textContent.
import A from "/vendor/aladin-lite/aladin.js";
import { HeadersTooLarge, checkForm, readHeaders } from "/static/fits_headers.js";

const $ = (id) => document.getElementById(id);
const API = "/api/v1";
const state = { ctx: null, listing: null, aladin: null, markers: null, busy: false, lastFile: null };
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

function setStatus(content, isError = false) {
  const status = $("status");
  if (typeof content === "string") status.textContent = content;
  else status.replaceChildren(...content);
  status.classList.toggle("error", isError);
}

const HDU_PREFIX = /^HDUs? /;

// A problem+json as one headline (title and code) and each finding once. The
// gateway's `detail` joins the findings' messages, and a finding's message may
// already name its HDU: neither is repeated.
function problemNodes(problem, fallback) {
  if (!problem || typeof problem !== "object") return [el("p", { className: "headline" }, fallback)];
  const code = problem.code || String(problem.status || "");
  const headline = el("p", { className: "headline" }, problem.title || "Error");
  if (code) headline.append(" ", el("span", { className: "code" }, `(${code})`));
  const seen = new Set();
  const findings = [];
  for (const finding of problem.errors || []) {
    const message = finding.message || finding.code || "";
    const named = finding.hdu !== undefined && finding.hdu !== null && !HDU_PREFIX.test(message);
    const text = named ? `HDU ${finding.hdu}: ${message}` : message;
    if (text && !seen.has(text)) {
      seen.add(text);
      findings.push(text);
    }
  }
  if (findings.length === 1) return [headline, el("p", { className: "finding" }, findings[0])];
  if (findings.length) {
    return [headline, el("ul", {}, ...findings.map((text) => el("li", { className: "finding" }, text)))];
  }
  return problem.detail ? [headline, el("p", {}, problem.detail)] : [headline];
}

function problemText(problem, fallback) {
  return problemNodes(problem, fallback)
    .map((node) => node.textContent)
    .join("\n");
}

class ApiError extends Error {
  constructor(problem, fallback) {
    super(problemText(problem, fallback));
    this.problem = problem;
    this.fallback = fallback;
  }
}

function showError(err) {
  if (err instanceof ApiError) setStatus(problemNodes(err.problem, err.fallback), true);
  else setStatus(String(err.message || err), true);
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
    instrument: $("ctx-instrument").value.trim(),
    obsDate: $("ctx-date").value.trim(),
  };
  const names = state.names || {};
  const saved = { progId: names.prog_id, pi: names.pi_name, obName: names.ob_name, targetName: names.target_name, pa: names.position_angle };
  sessionStorage.setItem("bg-context", JSON.stringify({ ...ctx, ...saved, token: undefined }));
  sessionStorage.setItem("bg-token", ctx.token);
  return ctx;
}

// The context comes from the fragment (p2's link, or the sign-in's: `#token=...&ob=...`),
// else from this tab's last use. A token in the fragment is kept for this tab only and
// taken out of the address bar and history at once. Answers whether the fragment holds a
// whole context to load.
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
  $("ctx-instrument").value = pick("instrument", "instrument");
  $("ctx-date").value = pick("obs_date", "obsDate");
  // What the finding charts say of the OB (p2's link carries them; none: left blank).
  state.names = {
    prog_id: hash.get("prog_id") ?? saved.progId ?? "",
    pi_name: hash.get("pi") ?? saved.pi ?? "",
    ob_name: hash.get("ob_name") ?? saved.obName ?? "",
    target_name: hash.get("target_name") ?? saved.targetName ?? "",
    position_angle: hash.get("pa") ?? saved.pa ?? "",
  };
  const token = hash.get("token");
  if (token) {
    sessionStorage.setItem("bg-token", token);
    hash.delete("token");
    history.replaceState(null, "", `${location.pathname}${location.search}#${hash}`);
  }
  $("ctx-token").value = sessionStorage.getItem("bg-token") || "";
  return Boolean(token) && ["ob", "run", "ra", "dec"].every((key) => hash.get(key));
}

function obParams(ctx) {
  const params = new URLSearchParams({ run_id: ctx.run, target_ra: ctx.ra, target_dec: ctx.dec });
  if (ctx.boaRa && ctx.boaDec) {
    params.set("boa_ra", ctx.boaRa);
    params.set("boa_dec", ctx.boaDec);
  }
  if (ctx.instrument) params.set("instrument", ctx.instrument);
  return params;
}

// The OB context of a listing or a selection, with the observation date the Gaia
// image is drawn for (the gateway takes today when there is none).
function obRequest(ctx) {
  const params = obParams(ctx);
  if (ctx.obsDate) params.set("obs_date", ctx.obsDate);
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
  if (!resp.ok) throw new ApiError(data, `${resp.status} ${resp.statusText}`);
  return data;
}

// ---- the list -----------------------------------------------------------------------------------

// One line cut with an ellipsis (page.css); the whole text in its tooltip.
function line(className, text) {
  return el("span", { className, title: text }, text);
}

// A file name inside a sentence: cut with an ellipsis too, never broken mid-word.
function fileName(name) {
  return el("span", { className: "file", title: name }, name);
}

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
  const parts = [line("name", image.file_name)];
  if (meta) parts.push(line("meta", meta));
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

// The OB's Gaia image: listed before it is made; made when chosen (a few seconds).
function gaiaRow(gaia, selected) {
  const meta = gaia.available
    ? gaia.image
      ? `pseudo image of Gaia DR3 sources, G band`
      : `pseudo image of Gaia DR3 sources, made when chosen`
    : `unavailable (${gaia.code}): ${gaia.message}`;
  const row = choice("gaia", [line("name", gaia.name), line("meta", meta)], {
    checked: selected === "gaia",
    dataset: { available: gaia.available ? "yes" : "no", fitsHash: gaia.image ? gaia.image.fits_hash : "" },
  });
  if (!gaia.available && selected !== "gaia") row.querySelector("input").disabled = true;
  return row;
}

function group(title, rows, emptyText) {
  const box = el("div", { className: "group" }, el("h3", {}, title));
  if (rows.length) box.append(...rows);
  else if (emptyText) box.append(el("p", { className: "empty" }, emptyText));
  return box;
}

function renderList(listing) {
  const selected = listing.selected.selection;
  const groups = [
    group("Default survey", [
      choice("default", [line("name", listing.default_survey.name)], {
        checked: selected === "default",
      }),
    ]),
  ];
  // The named surveys (`survey|NAME`), each displayed from its own HiPS.
  const surveys = listing.surveys.map((survey) => {
    const meta = [survey.band && `band ${survey.band}`, survey.fits_tiles && "FITS tiles"].filter(Boolean).join(" · ");
    const parts = [line("name", survey.name)];
    if (meta) parts.push(line("meta", meta));
    return choice(survey.selection, parts, { checked: selected === survey.selection, dataset: { survey: survey.name } });
  });
  if (surveys.length) groups.push(group("Surveys", surveys));
  // The seed's order: the default survey, the Gaia image, the user's images, the archive's.
  groups.push(group("Gaia", [gaiaRow(listing.gaia, selected)]));
  groups.push(group("My images", listing.own.map((i) => imageRow(i, selected, true)), "No image of yours fits this OB."));
  groups.push(group("Shared images", listing.shared.map((i) => imageRow(i, selected, false)), "None."));
  groups.push(archiveGroup(listing.archive, selected));
  const listed =
    ["default", "gaia"].includes(selected) ||
    listing.surveys.some((survey) => survey.selection === selected) ||
    listing.archive.images.some((image) => image.selection === selected);
  if (listing.selected.kind !== "user_image" && !listed) {
    groups.push(group("Other", [choice(selected, [line("name", selected)], { checked: true })]));
  }
  if (listing.tombstones.length) {
    const rows = listing.tombstones.map((t) => {
      const verb = t.reason === "culled" ? "culled" : "deleted";
      const radio = el("input", { type: "radio", name: "background", disabled: true });
      const label = el(
        "label",
        {},
        line("name", t.file_name),
        line("meta", `${verb} on ${formatDate(t.removed_at)}, please upload again`),
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
    params: obRequest(ctx),
  });
  state.listing = listing;
  renderList(listing);
  await display(listing.selected);
  return listing;
}

async function select(selection) {
  if (state.busy) return;
  const ctx = state.ctx;
  setStatus(selection === "gaia" ? "Making the Gaia image of this field…" : "");
  try {
    const answer = await putSelection(ctx, selection);
    if (answer && answer.state === "preparing") {
      setStatus("Fetching the image from the ESO archive; it is shown once it is checked and stored…");
      await refresh();
      await awaitArchive(selection);
      return;
    }
    setStatus("");
    await refresh();
  } catch (err) {
    showError(err);
    await refresh().catch(() => {});
  }
}

// An archive image is fetched in the background: the gateway answers 202 and the OB shows
// it once it is stored. The list is asked again until then (or until the fetch failed).
async function awaitArchive(dpSelection) {
  for (let round = 0; round < 300; round += 1) {
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const listing = await refresh();
    const entry = listing.archive.images.find((image) => image.selection === dpSelection);
    if (!entry || entry.state !== "preparing") {
      if (entry && entry.state === "failed") setStatus(`The archive image could not be used (${entry.code}): ${entry.message}`, true);
      else setStatus("");
      return;
    }
  }
}

function archiveGroup(archive, selected) {
  if (!archive.available) {
    return group("ESO archive", [], `The ESO archive gives no answer now (${archive.code}): ${archive.message}`);
  }
  const rows = archive.images.map((image) => {
    const when = image.observed ? image.observed.slice(0, 10) : "";
    const depth = image.depth_abmag ? `depth ${image.depth_abmag.toFixed(1)} AB` : "";
    const state = {
      ready: "",
      available: "fetched when chosen",
      preparing: "being fetched…",
      failed: `failed (${image.code}): ${image.message}`,
    }[image.state];
    const meta = [image.instrument, image.filter && `filter ${image.filter}`, when, depth, state].filter(Boolean).join(" · ");
    return choice(image.selection, [line("name", image.dp_id), line("meta", meta)], {
      checked: selected === image.selection,
      dataset: { dpId: image.dp_id, state: image.state, fitsHash: image.image ? image.image.fits_hash : "" },
    });
  });
  return group("ESO archive", rows, "No released archive image holds this OB's target.");
}

async function putSelection(ctx, selection) {
  const json = { ...Object.fromEntries(obRequest(ctx)), selection };
  state.busy = true;
  try {
    return await api("PUT", `${API}/obs/${encodeURIComponent(ctx.ob)}/background-image`, { json });
  } finally {
    state.busy = false;
  }
}

async function removeImage(image) {
  if (!confirm(`Delete ${image.file_name}? OBs using it fall back to the default survey.`)) return;
  try {
    await api("DELETE", `${API}/images/${image.fits_hash}`);
    setStatus([el("p", {}, "Deleted ", fileName(image.file_name), ".")]);
    await refresh();
  } catch (err) {
    showError(err);
  }
}

// ---- upload -------------------------------------------------------------------------------------

// "sending" while the bytes go up (the bar), "processing" once they are all sent and
// the gateway checks the file and builds its mosaic and HiPS (seconds for a large
// image), "" when the answer is in.
function setUploadPhase(phase, file) {
  state.busy = phase !== "";
  document.body.dataset.upload = phase;
  document.querySelector("#upload-button .spinner").hidden = !phase;
  $("upload-text").textContent = {
    checking: "Checking…",
    sending: "Uploading…",
    resuming: "Resuming…",
    processing: "Processing…",
    "": "Upload",
  }[phase];
  $("upload-button").setAttribute("aria-busy", phase ? "true" : "false");
  $("upload-input").disabled = state.busy;
  $("upload-retry").hidden = true;
  const bar = $("upload-progress");
  bar.hidden = !phase || phase === "checking";
  if (phase === "processing") {
    bar.removeAttribute("value"); // indeterminate: the gateway tells no progress of its own
    setStatus([
      el("p", {}, "Checking ", fileName(file.name), " against the OB and building its display…"),
      el("p", { className: "next" }, "This takes a few seconds, more for a large image."),
    ]);
  }
}

function askForBandpass() {
  const field = $("upload-bandpass");
  field.classList.add("wanted");
  field.focus();
  $("upload-retry").hidden = !state.lastFile;
  const next = "Type the image's bandpass (e.g. Ks) in the Bandpass field and upload again.";
  $("status").append(el("p", { className: "next" }, next));
}

// The check before sending: the file's headers alone (a few KB of it) go to the gateway,
// which answers what the upload would of them. Answers the refusal (a problem+json) or null
// when the upload may go: the headers pass, or they cannot be checked first (a gzip or .Z
// file, headers over the route's limit), and the full check after upload judges the file.
async function checkFirst(file, bandpass) {
  const ctx = state.ctx;
  let read;
  try {
    read = await readHeaders(file);
  } catch (err) {
    if (err instanceof HeadersTooLarge) return null;
    throw err;
  }
  if (read.compressed) return null;
  const fields = obParams(ctx);
  if (bandpass) fields.set("bandpass", bandpass);
  const resp = await fetch(`${API}/obs/${encodeURIComponent(ctx.ob)}/background-images/check`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ctx.token}`, Accept: "application/json" },
    body: checkForm(read, fields),
  });
  const data = await resp.json().catch(() => null);
  if (resp.ok) return null;
  if (resp.status === 413 && data && data.part === "headers") return null;
  return data || { title: `${resp.status} ${resp.statusText}`, status: resp.status };
}

async function upload(file) {
  const bandpass = $("upload-bandpass").value.trim();
  state.lastFile = file;
  setUploadPhase("checking", file);
  setStatus([el("p", {}, "Checking the headers of ", fileName(file.name), " before sending it…")]);
  let refused;
  try {
    refused = await checkFirst(file, bandpass);
  } catch (err) {
    refused = { title: "The check before sending failed", detail: String(err.message || err) };
  }
  if (refused) {
    setUploadPhase("");
    $("upload-input").value = "";
    setStatus(problemNodes(refused, "The check before sending failed"), true);
    $("status").append(
      el(
        "p",
        { className: "next", id: "checked-first" },
        "Found in the file's headers before sending it: nothing was uploaded. Choose another file, or fix the OB.",
      ),
    );
    if (refused.code === "NO_FILTER") askForBandpass();
    return;
  }
  return send(file, bandpass);
}

// The upload itself: resumable (tus 1.0, tus-js-client). A dropped connection is resumed
// from where the gateway stands ("Resuming…"); after a reload of the page, choosing the same
// file again resumes it too (tus-js-client keeps the upload's URL in localStorage). The last
// PATCH answers as a one-shot upload does: the image, or why the file was refused.
function send(file, bandpass) {
  const ctx = state.ctx;
  const metadata = { filename: file.name };
  for (const [key, value] of obParams(ctx)) metadata[key] = value;
  if (bandpass) metadata.bandpass = bandpass;
  const bar = $("upload-progress");
  setUploadPhase("sending", file);
  bar.value = 0;
  setStatus([el("p", {}, "Uploading ", fileName(file.name), "…")]);
  return new Promise((resolve) => {
    const finish = async (status, body) => {
      setUploadPhase("");
      if (status === 201) {
        $("upload-bandpass").classList.remove("wanted");
        state.lastFile = null;
        setStatus([el("p", {}, "Uploaded ", fileName(file.name), "; it is now the selected background.")]);
        await refresh().catch(showError);
      } else if (status === 0) {
        setStatus("The upload was interrupted (network error); choose the file again to resume it.", true);
        $("upload-retry").hidden = false;
      } else {
        setStatus(problemNodes(body, `Upload failed: ${status}`), true);
        if (body && body.code === "NO_FILTER") askForBandpass();
      }
      $("upload-input").value = "";
      resolve();
    };
    const upload = new window.tus.Upload(file, {
      endpoint: `${API}/obs/${encodeURIComponent(ctx.ob)}/uploads`,
      headers: { Authorization: `Bearer ${ctx.token}`, Accept: "application/json" },
      metadata,
      chunkSize: Infinity, // one PATCH of the rest: as fast as a one-shot upload
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000, 30000],
      removeFingerprintOnSuccess: true,
      // The same file for the same OB resumes; another OB starts afresh.
      fingerprint: async (f) => ["bgimages", ctx.ob, ctx.run, f.name, f.size, f.lastModified].join("|"),
      onProgress(sent, total) {
        if (document.body.dataset.upload === "resuming") setUploadPhase("sending", file);
        if (sent < total) bar.value = Math.round((100 * sent) / total);
        else if (document.body.dataset.upload === "sending") setUploadPhase("processing", file);
      },
      onShouldRetry(err, attempt, options) {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        const retry = status === 0 || status === 409 || status === 423 || status >= 500;
        if (retry) {
          setUploadPhase("resuming", file);
          setStatus([el("p", {}, "The connection dropped: resuming the upload of ", fileName(file.name), "…")]);
        }
        return retry;
      },
      onError(err) {
        const resp = err.originalResponse;
        let body = null;
        try {
          body = resp ? JSON.parse(resp.getBody()) : null;
        } catch {
          body = null;
        }
        finish(resp ? resp.getStatus() : 0, body);
      },
      onSuccess(payload) {
        const resp = payload && payload.lastResponse;
        let body = null;
        try {
          body = resp ? JSON.parse(resp.getBody()) : null;
        } catch {
          body = null;
        }
        finish(resp ? resp.getStatus() : 201, body);
      },
    });
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        setStatus([el("p", {}, "Resuming the upload of ", fileName(file.name), " where it stopped…")]);
      }
      upload.start();
    });
  });
}

// ---- display ------------------------------------------------------------------------------------

function absolute(url) {
  return new URL(url, location.href).href;
}

// The smallest view holding every footprint of the image (all chips of a
// paw-print) and the OB's positions: offsets from the target, so that an image
// across RA 0 stays whole.
function footprintView(image, ctx) {
  const ra0 = Number(ctx.ra);
  const points = (image.footprints || []).flatMap((fp) => fp.corners);
  if (!points.length) return null;
  points.push([ra0, Number(ctx.dec)]);
  if (ctx.boaRa && ctx.boaDec) points.push([Number(ctx.boaRa), Number(ctx.boaDec)]);
  const dRa = points.map(([ra]) => ((((ra - ra0) % 360) + 540) % 360) - 180);
  const decs = points.map(([, dec]) => dec);
  const [raMin, raMax] = [Math.min(...dRa), Math.max(...dRa)];
  const [decMin, decMax] = [Math.min(...decs), Math.max(...decs)];
  const dec = (decMin + decMax) / 2;
  const ra = (((ra0 + (raMin + raMax) / 2) % 360) + 360) % 360;
  const width = (raMax - raMin) * Math.cos((dec * Math.PI) / 180);
  const height = decMax - decMin;
  const [w, h] = state.aladin.getSize();
  // Aladin's field of view is the width of the view: a tall field needs more of it.
  const fov = Math.max(width, (height * w) / Math.max(h, 1)) * 1.15;
  return { ra, dec, fov: Math.min(Math.max(fov, 1 / 60), 180) };
}

// Target and BOA star as two layers of their own: a red circle and a cyan
// rhombus, labelled on the canvas (Aladin draws labels as text; these layer
// names are ours, never a user's: Aladin renders layer names as HTML).
const MARKERS = {
  target: { name: "target", shape: "circle", color: "#ff3b3b", sourceSize: 20 },
  boa: { name: "BOA star", shape: "rhomb", color: "#22d3ee", sourceSize: 18 },
};

function markOb(ctx) {
  const aladin = state.aladin;
  if (!state.markers) {
    state.markers = {};
    for (const [key, style] of Object.entries(MARKERS)) {
      const layer = A.catalog({
        ...style,
        displayLabel: true,
        labelColumn: "label",
        labelColor: style.color,
        labelFont: "bold 14px sans-serif",
      });
      aladin.addCatalog(layer);
      state.markers[key] = layer;
    }
  }
  const { target, boa } = state.markers;
  target.removeAll();
  boa.removeAll();
  target.addSources([A.source(Number(ctx.ra), Number(ctx.dec), { label: MARKERS.target.name })]);
  const hasBoa = Boolean(ctx.boaRa && ctx.boaDec);
  if (hasBoa) boa.addSources([A.source(Number(ctx.boaRa), Number(ctx.boaDec), { label: MARKERS.boa.name })]);
  $("legend").hidden = false;
  $("legend-boa").hidden = !hasBoa;
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
  $("display-hint").hidden = true;
  let layer;
  let view = null;
  // An OB showing its Gaia image that is not stored (culled since): made again first.
  if (selection.kind === "gaia" && !selection.image && state.listing.gaia.available) {
    caption.textContent = "Making the Gaia image of this field…";
    selection = await putSelection(ctx, "gaia");
  }
  // Aladin Lite renders layer names as HTML: only names of ours, never user text.
  const LAYERS = { gaia: "Gaia image", eso_image: "archive image", user_image: "user image" };
  if (selection.image && LAYERS[selection.kind]) {
    const image = selection.image;
    const hips = await api("GET", `${API}/images/${image.fits_hash}/hips`, {
      params: new URLSearchParams({ ob_id: ctx.ob }),
    });
    layer = A.imageHiPS(hips.hips_url, { name: `${LAYERS[selection.kind]} ${image.fits_hash.slice(0, 12)}` });
    view = footprintView(image, ctx);
    const band = selection.kind === "gaia" ? ", G band" : image.filter ? ` (filter ${image.filter})` : "";
    caption.textContent = `${image.file_name}${band}`;
  } else if (selection.kind === "survey" && selection.survey) {
    // The survey's name comes from the gateway's settings (a plain word), not from a user.
    const survey = selection.survey;
    layer = A.imageHiPS(absolute(survey.hips_url), { name: `survey ${survey.name}` });
    caption.textContent = `${survey.name}${survey.band ? ` (band ${survey.band})` : ""}`;
  } else {
    const survey = state.listing.default_survey;
    layer = A.imageHiPS(absolute(survey.hips_url), { name: "default survey" });
    caption.textContent =
      selection.kind === "default" ? survey.name : `${selection.selection} (shown over the default survey)`;
  }
  caption.title = caption.textContent;
  if (view) {
    aladin.gotoRaDec(view.ra, view.dec);
    aladin.setFoV(view.fov);
  } else {
    aladin.gotoRaDec(Number(ctx.ra), Number(ctx.dec));
  }
  aladin.setBaseImageLayer(layer);
  markOb(ctx);
  document.body.dataset.display = selection.selection;
}

// ---- finding charts -----------------------------------------------------------------------------

// The OB's set of charts (the default survey, the Gaia image, the custom image), rendered
// by the gateway and shown below the dialog; the names are text (the page sets textContent).
async function generateCharts() {
  const ctx = state.ctx;
  const names = Object.fromEntries(Object.entries(state.names || {}).filter(([, v]) => v !== ""));
  const json = { ...Object.fromEntries(obRequest(ctx)), ...names };
  $("fc-button").disabled = true;
  $("fc-spinner").hidden = false;
  document.body.dataset.charts = "rendering";
  setStatus("Rendering the finding charts…");
  try {
    const answer = await api("POST", `${API}/obs/${encodeURIComponent(ctx.ob)}/finding-charts`, { json });
    const figures = answer.charts.map((chart, n) => {
      const img = el("img", {
        src: `data:image/jpeg;base64,${chart.jpeg_base64}`,
        alt: `Finding chart ${n + 1}: ${chart.title}`,
      });
      img.dataset.kind = chart.kind;
      const caption = el("figcaption", {}, `${n + 1}. ${chart.title} (${Math.round(chart.bytes / 1024)} kB)`);
      return el("figure", {}, img, caption);
    });
    $("charts-list").replaceChildren(...figures);
    $("charts-note").textContent = answer.warnings.join(" ");
    $("charts").hidden = false;
    setStatus(`${answer.charts.length} finding charts made.`);
    document.body.dataset.charts = String(answer.charts.length);
  } catch (err) {
    showError(err);
    document.body.dataset.charts = "failed";
  } finally {
    $("fc-button").disabled = false;
    $("fc-spinner").hidden = true;
  }
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
    $("upload-bandpass").disabled = false;
    $("upload-button").setAttribute("aria-disabled", "false");
    $("upload-button").title = "Choose a FITS file to upload for this OB";
    $("fc-button").disabled = false;
    $("dialog-ob").textContent = `OB ${state.ctx.ob} · run ${state.ctx.run}`;
  } catch (err) {
    showError(err);
  }
}

const signedIn = restoreContext();
$("context").addEventListener("submit", load);
$("upload-input").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (file && state.ctx && !state.busy) upload(file);
});
// The file input is hidden inside the button: Enter and Space open it as a click does.
$("upload-button").addEventListener("keydown", (ev) => {
  if ((ev.key === "Enter" || ev.key === " ") && !$("upload-input").disabled) {
    ev.preventDefault();
    $("upload-input").click();
  }
});
$("upload-retry").addEventListener("click", () => {
  if (state.lastFile && state.ctx && !state.busy) upload(state.lastFile);
});
$("upload-bandpass").addEventListener("input", (ev) => ev.target.classList.remove("wanted"));
$("fc-button").addEventListener("click", () => state.ctx && generateCharts());
document.body.dataset.ready = "yes";
if (signedIn) {
  $("context-panel").open = false;
  load();
}
