// Builds the npm package: the wasm core (wasm-pack, custom size profile), wasm-opt -Oz
// (npm binaryen), the TypeScript wrapper (esbuild, ESM) and its .d.ts (tsc), then copies
// the result into demo/pkg for the demo page.
//
//   node scripts/build.mjs            full build
//   node scripts/build.mjs --no-wasm  reuse js/wasm (TypeScript changes only)
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const js = join(dirname(fileURLToPath(import.meta.url)), "..");
const root = join(js, "..");
const bin = (name) => join(js, "node_modules", ".bin", name);
const run = (cmd, args, cwd = root) => execFileSync(cmd, args, { cwd, stdio: "inherit" });

if (!process.argv.includes("--no-wasm")) {
  // wasm-bindgen comes from PATH (installed by scripts/setup-web.sh at the exact version).
  run("wasm-pack", [
    "build", "sdk-wasm", "--target", "web", "--profile", "wasm-release", "--no-opt",
    "--mode", "no-install", "--no-pack", "--out-dir", "../js/wasm", "--out-name", "tidings_wasm",
  ]);
  run(bin("wasm-opt"), [
    "-Oz", "--converge", "--enable-bulk-memory", "--enable-mutable-globals", "--enable-nontrapping-float-to-int",
    "--enable-sign-ext", "--enable-reference-types", "--enable-multivalue",
    "--strip-debug", "--strip-producers",
    "wasm/tidings_wasm_bg.wasm", "-o", "wasm/tidings_wasm_bg.wasm",
  ], js);
}

// Private members (TypeScript `private`) that the minifier may rename: each is used only
// as `this.NAME` inside the package, never on another object, in a string or by the
// tests through dist (checked below, so a new clash fails the build instead of breaking
// at run time). Worth ~0.3 KiB gzip against the bundle budget.
const MANGLED = [
  "wantConnected", "setConnection", "draining", "wakeTimer", "flushTimer", "flushFrame",
  "flushQueued", "waiters", "fetchToken", "runStore", "resolveWaiters", "nextSeq",
  "leaderId", "lastSeen", "leaderHidden", "lockAbort", "releaseLock", "wantConnect",
  "queueForLock", "holdLock", "lostLock", "takeOver", "becomeLeader", "seeEpoch",
  "onFollowerBatch", "settleFromBatch", "onNewLeader", "resendPending", "retryable",
  "onReply", "runLocally", "onCommand", "onHello", "onBye", "addRef", "nextClient",
  "flushQueue", "persistQueue", "heard", "lastAlive",
];
{
  const read = (dir, ext) => readdirSync(join(js, dir)).filter((f) => f.endsWith(ext)).map((f) => readFileSync(join(js, dir, f), "utf8"));
  const sources = [...read("src", ".ts"), readFileSync(join(js, "wasm/tidings_wasm.js"), "utf8")].join("\n");
  const outside = [...read("test", ".mjs"), ...read("demo", ".js")].join("\n");
  for (const name of MANGLED) {
    const foreign = [...sources.matchAll(new RegExp(`([\\w$\\])]*)\\.${name}\\b|["'\`]${name}["'\`]`, "g"))].filter((m) => m[1] !== "this");
    if (foreign.length || new RegExp(`\\.${name}\\b`).test(outside)) {
      throw new Error(`cannot mangle "${name}": used outside \`this.${name}\` (${foreign[0]?.[0] ?? "tests or demo"})`);
    }
  }
}

const dist = join(js, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await esbuild.build({
  entryPoints: { index: join(js, "src/index.ts"), testing: join(js, "src/testing.ts") },
  outdir: dist,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  minify: true,
  mangleProps: new RegExp(`^(${MANGLED.join("|")})$`),
  legalComments: "none",
  chunkNames: "chunk-[hash]",
  logLevel: "warning",
});
cpSync(join(js, "wasm/tidings_wasm_bg.wasm"), join(dist, "tidings_wasm_bg.wasm"));

// Declarations: tsc for the wrapper, the wasm-bindgen one for the glue it references.
run(bin("tsc"), ["-p", "tsconfig.json"], js);
mkdirSync(join(dist, "types/wasm"), { recursive: true });
// The glue's `[Symbol.dispose]` needs lib esnext.disposable; apps on older libs would fail
// to type-check without skipLibCheck, and the glue is internal anyway.
const glueTypes = readFileSync(join(js, "wasm/tidings_wasm.d.ts"), "utf8").replace(/^\s*\[Symbol\.dispose\]\(\): void;\n/m, "");
writeFileSync(join(dist, "types/wasm/tidings_wasm.d.ts"), glueTypes);
writeFileSync(join(dist, "index.d.ts"), 'export * from "./types/src/index.js";\n');
writeFileSync(join(dist, "testing.d.ts"), 'export * from "./types/src/testing.js";\n');

const pkg = join(js, "demo/pkg");
rmSync(pkg, { recursive: true, force: true });
cpSync(dist, pkg, { recursive: true, filter: (src) => !src.includes(`${"/"}types`) });
if (!existsSync(join(pkg, "index.js"))) throw new Error("demo/pkg was not written");
console.log("built js/dist and js/demo/pkg");
