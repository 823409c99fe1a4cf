// Reading a FITS file's headers alone, for the check before sending: each HDU's header
// blocks (File.slice), its data skipped by the size its header declares; no pixel is read.
// The Python client does the same (bgimages_client/_fits_headers.py). The gateway's validator
// checks the headers it gets against its own reading of them, and the upload is validated in
// full all the same: this is advice, never trust.
//
// A module of its own, with no page in it: the bench runs it in Node on a 2 GB file.

const BLOCK = 2880;
const CARD = 80;
const READ_BLOCKS = 4; // blocks read at a time while looking for a header's END

export class HeadersTooLarge extends Error {}

const ascii = new TextDecoder("latin1");

function isText(bytes) {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] < 0x20 || bytes[i] > 0x7e) return false;
  return true;
}

function hasEnd(block) {
  for (let i = 0; i + CARD <= block.length; i += CARD) {
    if (block[i] === 0x45 && block[i + 1] === 0x4e && block[i + 2] === 0x44) {
      let blank = true;
      for (let j = i + 3; j < i + CARD && blank; j++) blank = block[j] === 0x20;
      if (blank) return true;
    }
  }
  return false;
}

// A keyword's value as written (before any comment), or null when absent.
function text(cards, key) {
  const prefix = `${key.padEnd(8)}=`;
  for (let i = 0; i < cards.length; i += CARD) {
    if (cards.startsWith(prefix, i)) return cards.slice(i + 10, i + CARD).split("/", 1)[0].trim();
  }
  return null;
}

function integer(cards, key) {
  const value = text(cards, key);
  return value !== null && /^[+-]?[0-9]+$/.test(value) ? Number(value) : null;
}

// The data size a header declares (FITS 4.0 section 4.4.1), without padding.
export function dataBytes(header, primary) {
  const cards = ascii.decode(header);
  const bitpix = integer(cards, "BITPIX");
  const naxis = integer(cards, "NAXIS");
  if (bitpix === null || naxis === null || naxis <= 0) return 0;
  let axes = [];
  for (let n = 1; n <= naxis; n++) axes.push(integer(cards, `NAXIS${n}`) || 0);
  let pcount = primary ? 0 : integer(cards, "PCOUNT") || 0;
  let gcount = primary ? 1 : integer(cards, "GCOUNT") || 1;
  if (primary && axes[0] === 0 && text(cards, "GROUPS") === "T") {
    axes = axes.slice(1); // random groups
    pcount = integer(cards, "PCOUNT") || 0;
    gcount = integer(cards, "GCOUNT") || 1;
  }
  if (axes.some((a) => a < 0)) return 0; // the validator says why
  const pixels = axes.reduce((a, b) => a * b, 1);
  return Math.max(0, (Math.abs(bitpix) / 8) * gcount * (pcount + pixels));
}

// { size, segments: [{ offset, header (Uint8Array), dataBytes }], compressed: "" | "gzip" | "compress" }.
// HeadersTooLarge past maxBytes of headers (the route's limit): the file is checked after upload.
export async function readHeaders(file, { maxBytes = 16 << 20, maxHdus = 4000 } = {}) {
  const size = file.size;
  const magic = new Uint8Array(await file.slice(0, 2).arrayBuffer());
  if (magic[0] === 0x1f && (magic[1] === 0x8b || magic[1] === 0x9d)) {
    return { size, segments: [], compressed: magic[1] === 0x8b ? "gzip" : "compress" };
  }
  const segments = [];
  let offset = 0;
  let total = 0;
  while (offset < size && segments.length <= maxHdus) {
    const blocks = [];
    let ended = false;
    let at = offset;
    reading: while (at < size) {
      const chunk = new Uint8Array(await file.slice(at, at + BLOCK * READ_BLOCKS).arrayBuffer());
      for (let start = 0; start < chunk.length; start += BLOCK) {
        const block = chunk.subarray(start, start + BLOCK);
        blocks.push(block);
        total += block.length;
        if (total > maxBytes) throw new HeadersTooLarge(`the headers are more than ${maxBytes} bytes`);
        if (block.length < BLOCK) break reading; // the file ends inside the header
        if (hasEnd(block)) {
          ended = true;
          break reading;
        }
        if (!isText(block)) break reading; // not a header: the validator says why
        if (!segments.length && blocks.length === 1 && ascii.decode(block.subarray(0, 6)) !== "SIMPLE") {
          break reading; // not FITS
        }
      }
      at += chunk.length;
      if (chunk.length < BLOCK * READ_BLOCKS) break;
    }
    const header = concat(blocks);
    if (segments.length && ascii.decode(header.subarray(0, 8)) !== "XTENSION") {
      // What follows the last HDU (padding, or junk): sent as it is, for the validator to judge.
      segments.push({ offset, header: header.subarray(0, BLOCK), dataBytes: 0 });
      break;
    }
    const declared = ended ? dataBytes(header, !segments.length) : 0;
    segments.push({ offset, header, dataBytes: declared });
    if (!ended) break; // the validator says why
    offset += header.length + Math.ceil(declared / BLOCK) * BLOCK;
  }
  return { size, segments, compressed: "" };
}

function concat(parts) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// The check route's form: the OB's fields, then the file's size, the layout and the headers.
export function checkForm(read, fields) {
  const form = new FormData();
  for (const [key, value] of fields) form.append(key, value);
  form.append("file_size", String(read.size));
  const layout = read.segments.map((s) => ({ offset: s.offset, header_bytes: s.header.length, data_bytes: s.dataBytes }));
  form.append("layout", JSON.stringify(layout));
  form.append("headers", new Blob(read.segments.map((s) => s.header), { type: "application/octet-stream" }), "headers");
  return form;
}
