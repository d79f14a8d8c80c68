// Prints the package's transfer size: the wasm module and the JavaScript an app loads
// (dist/*.js, minified ESM), raw and gzip -9, in KiB.
//   node scripts/size.mjs [--json] [--budget KIB]
// With --budget, exits 1 when the total gzip size is over KIB (sizes are deterministic for
// a given lockfile, so this is a budget check, not a timing assertion).
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync, brotliCompressSync } from "node:zlib";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const kib = (n) => (n / 1024).toFixed(1);
const measure = (files) => {
  const bytes = files.map((f) => readFileSync(join(dist, f)));
  return {
    files,
    raw: bytes.reduce((a, b) => a + b.length, 0),
    gzip: bytes.reduce((a, b) => a + gzipSync(b, { level: 9 }).length, 0),
    brotli: bytes.reduce((a, b) => a + brotliCompressSync(b).length, 0),
  };
};
const all = readdirSync(dist);
const wasm = measure(all.filter((f) => f.endsWith(".wasm")));
// What `import { createClient } from "tidings"` loads: the entry and its chunks.
const js = measure(all.filter((f) => f.endsWith(".js") && f !== "testing.js"));
const total = { raw: wasm.raw + js.raw, gzip: wasm.gzip + js.gzip, brotli: wasm.brotli + js.brotli };
if (process.argv.includes("--json")) {
  console.log(JSON.stringify({ wasm, js, total }, null, 2));
} else {
  const row = (name, m) =>
    `${name.padEnd(8)} ${kib(m.raw).padStart(8)} KiB raw ${kib(m.gzip).padStart(7)} KiB gzip ${kib(m.brotli).padStart(7)} KiB brotli`;
  console.log(row("wasm", wasm));
  console.log(row("js", js));
  console.log(row("total", total));
}

const budgetAt = process.argv.indexOf("--budget");
if (budgetAt !== -1) {
  const budget = Number(process.argv[budgetAt + 1]);
  const gzipKib = total.gzip / 1024;
  if (!(gzipKib < budget)) {
    console.error(`bundle is ${kib(total.gzip)} KiB gzip, over the ${budget} KiB budget (docs/benchmarks.md)`);
    process.exit(1);
  }
  console.log(`within the ${budget} KiB gzip budget (${kib(budget * 1024 - total.gzip)} KiB left)`);
}
