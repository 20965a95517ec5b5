/**
 * Bench section `startup`: how long punchd takes from spawn to a control
 * socket that accepts connections, and its resident memory once idle.
 *
 * Each run spawns punchd with the permissions README documents and a fresh
 * socket path in a namespace of its own (tests/helpers/void_ns.ts: punchd
 * sets up its firewall table there, not on the host), with no probe
 * servers, and connects to the socket every {@linkcode POLL_MS} ms until a
 * connection is accepted. The time runs from just before the spawn (so it
 * includes `ip netns exec` and Deno's own start) to that connection. Then
 * the daemon idles {@linkcode IDLE_MS} ms and its VmRSS is read from
 * /proc; then it gets SIGTERM and is reaped. The first run is reported
 * apart as well (Deno's module cache may be cold then).
 *
 * ```
 * sudo deno run --allow-all tests/bench/startup.ts --trials 5
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Socket } from "../../ffi/socket.ts";
import { spawnPunchd } from "../helpers/daemon.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";
import {
  alignTable,
  type BenchContext,
  median,
  percentile,
  type Section,
  type SectionResult,
} from "./section.ts";

/** How often the socket is tried while punchd starts, ms. */
export const POLL_MS = 2;
/** How long punchd idles before its RSS is read, ms. */
export const IDLE_MS = 1000;
/** Longest start-up waited for, ms. */
const START_LIMIT_MS = 30_000;

/** One start of punchd. */
export interface StartupRun {
  /** Spawn to the first accepted control connection, ms. */
  listenMs: number;
  /** VmRSS after idling, KiB. */
  idleRssKiB: number;
}

/** Resident set of process `pid` in KiB (VmRSS), or NaN when it is gone. */
export function rssKiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = status.match(/^VmRSS:\s+(\d+) kB$/m);
    return match === null ? NaN : Number(match[1]);
  } catch {
    return NaN;
  }
}

/** True when something accepts a connection at `path` now. */
async function accepts(path: string): Promise<boolean> {
  using probe = Socket.create("unix", "stream");
  try {
    await probe.connect({ family: "unix", path }, AbortSignal.timeout(1000));
    return true;
  } catch {
    return false;
  }
}

/** Starts punchd once in namespace `ns`, times it, reads its idle RSS, stops it. */
async function startOnce(ns: string, dir: string, i: number): Promise<StartupRun> {
  const path = `${dir}/punchd-${i}.socket`;
  const started = performance.now();
  const { child, output, sofar } = spawnPunchd(
    ["--socket", path, "--log-level", "info"],
    ["ip", "netns", "exec", ns],
  );
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  try {
    while (!await accepts(path)) {
      if (exited) throw new Error(`punchd exited before listening:\n${sofar()}`);
      if (performance.now() - started > START_LIMIT_MS) {
        throw new Error(`punchd did not listen within ${START_LIMIT_MS} ms:\n${sofar()}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const listenMs = performance.now() - started;
    await new Promise((r) => setTimeout(r, IDLE_MS));
    // `ip netns exec` execs punchd in place: the child's pid is punchd's.
    const idleRssKiB = rssKiB(child.pid);
    return { listenMs, idleRssKiB };
  } finally {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await status;
    await output;
  }
}

/** Folded runs (rounded to 0.1 ms and whole KiB). */
export function foldStartup(runs: readonly StartupRun[]): {
  runs: number;
  firstMs: number | null;
  medianMs: number | null;
  p95Ms: number | null;
  medianIdleRssKiB: number | null;
  listenMs: number[];
  idleRssKiB: number[];
} {
  const round = (v: number) => Math.round(v * 10) / 10;
  const listen = runs.map((r) => round(r.listenMs));
  const rss = runs.map((r) => r.idleRssKiB).filter((v) => Number.isFinite(v));
  const orNull = (v: number) => Number.isNaN(v) ? null : v;
  return {
    runs: runs.length,
    firstMs: listen[0] ?? null,
    medianMs: orNull(median(listen)),
    p95Ms: orNull(percentile(listen, 95)),
    medianIdleRssKiB: orNull(median(rss)),
    listenMs: listen,
    idleRssKiB: rss,
  };
}

/** The section: `trials` starts (at most 20; 3 with `quick`). */
export const section: Section = async (context: BenchContext): Promise<SectionResult> => {
  const count = context.quick ? Math.min(3, context.trials) : Math.min(20, context.trials);
  const runs: StartupRun[] = [];
  const dir = await Deno.makeTempDir({ prefix: "punchd-bench-startup-" });
  try {
    await withVoidNamespace("startup", async (ns) => {
      for (let i = 0; i < count; i++) {
        runs.push(await startOnce(ns, dir, i));
        context.log(`startup: run ${i + 1}/${count}: ${runs.at(-1)?.listenMs.toFixed(1)} ms`);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const folded = foldStartup(runs);
  const ms = (v: number | null) => v === null ? "-" : v.toFixed(1);
  const mib = (v: number | null) => v === null ? "-" : (v / 1024).toFixed(1);
  return {
    name: "startup",
    json: { pollMs: POLL_MS, idleMs: IDLE_MS, ...folded },
    table: [
      `Daemon start-up: spawn to an accepted control connection, ${folded.runs} runs; RSS after ${IDLE_MS} ms idle`,
      ...alignTable([
        ["runs", "median ms", "p95 ms", "first ms", "idle RSS MiB (median)"],
        [
          String(folded.runs),
          ms(folded.medianMs),
          ms(folded.p95Ms),
          ms(folded.firstMs),
          mib(folded.medianIdleRssKiB),
        ],
      ]),
    ],
  };
};

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string" },
      quick: { type: "boolean", default: false },
      json: { type: "string" },
    },
  });
  const text = values.trials ?? (values.quick ? "3" : "10");
  if (!/^[1-9][0-9]*$/.test(text)) {
    throw new RangeError(`--trials: ${text} is not a positive integer`);
  }
  const encoder = new TextEncoder();
  const result = await section({
    trials: Number(text),
    quick: values.quick,
    log: (line) => Deno.stderr.writeSync(encoder.encode(`${line}\n`)),
  });
  Deno.stdout.writeSync(encoder.encode(result.table.join("\n") + "\n"));
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(result.json, null, 2) + "\n");
  }
}
