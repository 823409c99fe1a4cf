// The page's check before sending, run in Node on a file on disk: the same reader module the
// page imports (fits_headers.js, File.slice on a Blob of the file), then the same POST.
// Prints one JSON line per run: seconds reading the headers, seconds of the route, and what came back.
import { openAsBlob } from "node:fs";
import { checkForm, readHeaders } from "../services/gateway/static/fits_headers.js";

const [path, url, token, ob, run, ra, dec, runs] = process.argv.slice(2);
for (let i = 0; i < Number(runs); i++) {
  const t0 = performance.now();
  const file = await openAsBlob(path);
  const read = await readHeaders(file);
  const t1 = performance.now();
  const fields = new URLSearchParams({ run_id: run, target_ra: ra, target_dec: dec });
  const resp = await fetch(`${url}/api/v1/obs/${ob}/background-images/check`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
    body: checkForm(read, fields),
  });
  const body = await resp.json();
  const t2 = performance.now();
  const headerBytes = read.segments.reduce((n, s) => n + s.header.length, 0);
  console.log(
    JSON.stringify({
      read_s: (t1 - t0) / 1000,
      route_s: (t2 - t1) / 1000,
      status: resp.status,
      hdus: read.segments.length,
      header_bytes: headerBytes,
      after_upload: (body.after_upload || []).length,
      code: body.code || null,
    }),
  );
}
