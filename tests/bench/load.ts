/**
 * Load: N concurrent attempts per technique through one daemon pair in the lab (two
 * port-preserving NATs), each attempt on its own pair of ports. Reports successes, p50/p95
 * time from `initiate` to both sides' socket, CPU per attempt of both daemons (their own and
 * their `nft` children's), and each daemon's fds before and after (they must come back).
 *
 * Run alone: `deno run -A tests/bench/load.ts [--quick] [--count N] [--techniques a,b]
 * [--json FILE]` (root: the lab makes network namespaces).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Socket } from "../../ffi/socket.ts";
import type { Attempt, PunchdClient } from "../../src/client/client.ts";
import type { TechniqueChoice } from "../../src/control/codec.ts";
import type { Lab } from "../lab/lab.ts";
import { readExactly, relayUntilSettled } from "../lab/punch.ts";
import { withLabPair } from "./lab_pair.ts";
import { alignTable, type BenchContext, percentile, type Section } from "./section.ts";

/** The techniques the load section runs, in order. */
export const LOAD_TECHNIQUES: readonly TechniqueChoice[] = [
  "tcp-nutss",
  "tcp-syni",
  "udp",
  "tcp-prime",
  "auto",
];

/**
 * Flags the daemons run with under load: one client carries every attempt (the default is 256
 * per client), and an attempt may wait its turn behind a thousand others for the firewall.
 */
export const LOAD_DAEMON_ARGS = [
  "--log-level",
  "warn",
  "--max-attempts",
  "65536",
  "--attempt-timeout",
  "60",
];

/** CPU times of a process and its reaped children, in ms (from /proc/PID/stat). */
export interface CpuTimes {
  self: number;
  children: number;
}

/** utime+stime and cutime+cstime of `pid`, in ms. */
export function cpuTimes(pid: number): CpuTimes {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // "pid (comm) state ppid ...": fields after the comm's closing parenthesis, from field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  const tick = 1000 / 100; // USER_HZ is 100 on Linux.
  const at = (n: number) => fields[n - 3] ?? 0;
  return { self: (at(14) + at(15)) * tick, children: (at(16) + at(17)) * tick };
}

/** Resident memory of `pid` in kB (VmRSS). */
export function rssKb(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  return Number(m?.[1] ?? 0);
}

/** The outcome of a batch of concurrent attempts. */
export interface BatchResult {
  ok: number;
  /** Milliseconds from initiate to both sockets, of the successes. */
  times: number[];
  /** Failure reasons and how many attempts ended with each. */
  failures: Map<string, number>;
  wallMs: number;
}

/** What an attempt between the lab's daemon pair needs (a subset of lab_pair.ts's LabPair). */
export interface Pair {
  lab: Lab;
  clientA: PunchdClient;
  clientB: PunchdClient;
}

const encoder = new TextEncoder();

/** Milliseconds after which an attempt without both outcomes counts as stalled (past its timeout). */
const STALL_MS = 90_000;

/** Checks a connection the way a user would: the other NAT's public endpoint, data both ways. */
async function verify(
  pair: Pair,
  socketA: Socket,
  socketB: Socket,
  portA: number,
  portB: number,
  udp: boolean,
): Promise<void> {
  const peerA = socketA.peerAddress();
  const peerB = socketB.peerAddress();
  const want = (p: typeof peerA, ip: string, port: number) =>
    p.family === "inet" && p.address === ip && p.port === port;
  if (!want(peerA, pair.lab.publicB, portB) || !want(peerB, pair.lab.publicA, portA)) {
    throw new Error(`not direct: ${JSON.stringify(peerA)} / ${JSON.stringify(peerB)}`);
  }
  for (const [from, to, text] of [[socketA, socketB, "ab"], [socketB, socketA, "ba"]] as const) {
    await from.write(encoder.encode(text));
    if (udp) {
      const buf = new Uint8Array(64);
      const n = await to.read(buf, AbortSignal.timeout(5000));
      const got = new TextDecoder().decode(buf.subarray(0, n));
      if (got !== text) {
        const start = got.slice(0, 5).replace(/[^\x20-\x7e]/g, "?");
        throw new Error(`a stray datagram after handover (${n} bytes, "${start}...")`);
      }
    } else if (await readExactly(to, 2) !== text) throw new Error("bad data");
  }
}

/**
 * One attempt between host A (port `portA`) and host B (port `portB`): the time from initiate
 * until both sides hold their socket, after which the connection is verified and closed.
 */
async function attempt(
  pair: Pair,
  technique: TechniqueChoice,
  id: string,
  portA: number,
  portB: number,
): Promise<number> {
  const { lab, clientA: a, clientB: b } = pair;
  const udp = technique === "udp" || technique === "auto-udp";
  const started = performance.now();
  const initiator: Attempt = a.initiate({
    id: `a${id}`,
    technique,
    srcIp: lab.hostA.ip,
    srcPorts: [portA],
    dstIp: lab.publicB,
    dstPorts: [portB],
  });
  const fromA = initiator.progress[Symbol.asyncIterator]();
  const first = await fromA.next();
  if (first.done) {
    await initiator.socket;
    throw new Error("the initiator ended without progress");
  }
  const responder = b.respond({
    id: `b${id}`,
    technique,
    srcIp: lab.hostB.ip,
    srcPorts: [portB],
    dstIp: lab.publicA,
    dstPorts: [portA],
    extra: first.value,
  });
  let both = 0;
  void Promise.all([initiator.socket, responder.socket]).then(
    () => both = performance.now(),
    () => {},
  );
  // A side that never reports (a daemon that lost an attempt) must not hang the bench.
  const state = (p: Promise<Socket>) => {
    const s = { now: "pending" };
    p.then(() => s.now = "ok", () => s.now = "failed");
    return s;
  };
  const [stateA, stateB] = [state(initiator.socket), state(responder.socket)];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new Error(
          `stalled: no outcome within ${
            STALL_MS / 1000
          } s (initiator ${stateA.now}, responder ${stateB.now})`,
        ),
      );
      // Whatever still arrives is closed.
      for (const p of [initiator.socket, responder.socket]) p.then((s) => s.close(), () => {});
    }, STALL_MS);
  });
  const [sa, sb] = await Promise.race([relayUntilSettled(initiator, fromA, responder), stalled])
    .finally(() => clearTimeout(timer));
  if (sa.status === "rejected" || sb.status === "rejected") {
    if (sa.status === "fulfilled") sa.value.close();
    if (sb.status === "fulfilled") sb.value.close();
    throw sa.status === "rejected" ? sa.reason : (sb as PromiseRejectedResult).reason;
  }
  try {
    await verify(pair, sa.value, sb.value, portA, portB, udp);
  } finally {
    sa.value.close();
    sb.value.close();
  }
  return both - started;
}

/**
 * Runs `count` attempts of `technique` at once, attempt i on ports 20000+base+i (A) and
 * 30000+base+i (B), tagged `tag` in their IDs.
 */
export async function concurrentAttempts(
  pair: Pair,
  technique: TechniqueChoice,
  count: number,
  base: number,
  tag: string,
): Promise<BatchResult> {
  const started = performance.now();
  const results = await Promise.allSettled(
    Array.from(
      { length: count },
      (_, i) => attempt(pair, technique, `${tag}-${i}`, 20000 + base + i, 30000 + base + i),
    ),
  );
  const times: number[] = [];
  const failures = new Map<string, number>();
  for (const r of results) {
    if (r.status === "fulfilled") times.push(r.value);
    else {
      // Grouped: numbers (IDs, ports, ms, sizes) as N.
      const reason = ((r.reason as Error).message ?? String(r.reason))
        .replace(/\d+/g, "N").slice(0, 160);
      failures.set(reason, (failures.get(reason) ?? 0) + 1);
    }
  }
  return { ok: times.length, times, failures, wallMs: performance.now() - started };
}

/** The figures of one technique under load. */
interface TechniqueLoad {
  technique: string;
  attempts: number;
  successes: number;
  p50_ms: number;
  p95_ms: number;
  wall_ms: number;
  /** Both daemons' own CPU (utime+stime) per attempt. */
  cpu_per_attempt_ms: number;
  /** Their reaped children's (nft) CPU per attempt. */
  nft_cpu_per_attempt_ms: number;
  fds_a_before: number;
  fds_a_after: number;
  fds_b_before: number;
  fds_b_after: number;
  failures: Record<string, number>;
}

/** Options of the load section. */
export interface LoadOptions {
  /** Attempts at once (default 1000, 50 with --quick). */
  count?: number;
  techniques?: readonly TechniqueChoice[];
}

/** The load section: every technique, `count` attempts at once. */
export function loadSection(options: LoadOptions = {}): Section {
  return async (context: BenchContext) => {
    const count = options.count ?? (context.quick ? 50 : 1000);
    const techniques = options.techniques ?? LOAD_TECHNIQUES;
    const rows: TechniqueLoad[] = [];
    await withLabPair(
      { a: "preserving", b: "preserving", daemonArgs: LOAD_DAEMON_ARGS },
      async (pair) => {
        const { daemonA, daemonB } = pair;
        for (const [t, technique] of techniques.entries()) {
          // Each technique has its own ports (a previous flow's conntrack entries stay a while);
          // one attempt first starts the technique's worker, so the fds compared are steady.
          const base = t * 2000;
          const warm = await concurrentAttempts(pair, technique, 1, base + count, `w${t}`);
          if (warm.ok !== 1) {
            context.log(
              `load ${technique}: warm-up failed: ${[...warm.failures]}`,
            );
          }
          const fdsA = daemonA.fdCount();
          const fdsB = daemonB.fdCount();
          const cpuA = cpuTimes(daemonA.pid);
          const cpuB = cpuTimes(daemonB.pid);
          context.log(`load ${technique}: ${count} attempts at once`);
          const result = await concurrentAttempts(pair, technique, count, base, `l${t}`);
          const afterA = cpuTimes(daemonA.pid);
          const afterB = cpuTimes(daemonB.pid);
          const row: TechniqueLoad = {
            technique,
            attempts: count,
            successes: result.ok,
            p50_ms: round(percentile(result.times, 50)),
            p95_ms: round(percentile(result.times, 95)),
            wall_ms: Math.round(result.wallMs),
            cpu_per_attempt_ms: round(
              (afterA.self - cpuA.self + afterB.self - cpuB.self) / count,
            ),
            nft_cpu_per_attempt_ms: round(
              (afterA.children - cpuA.children + afterB.children - cpuB.children) / count,
            ),
            fds_a_before: fdsA,
            fds_a_after: await daemonA.settledFdCount(fdsA),
            fds_b_before: fdsB,
            fds_b_after: await daemonB.settledFdCount(fdsB),
            failures: Object.fromEntries(result.failures),
          };
          rows.push(row);
          context.log(`load ${technique}: ${JSON.stringify(row)}`);
        }
      },
    );
    const table = alignTable([
      [
        "technique",
        "ok/N",
        "p50 ms",
        "p95 ms",
        "wall s",
        "CPU/att ms",
        "nft/att ms",
        "fds A",
        "fds B",
      ],
      ...rows.map((r) => [
        r.technique,
        `${r.successes}/${r.attempts}`,
        String(r.p50_ms),
        String(r.p95_ms),
        (r.wall_ms / 1000).toFixed(1),
        String(r.cpu_per_attempt_ms),
        String(r.nft_cpu_per_attempt_ms),
        `${r.fds_a_before}->${r.fds_a_after}`,
        `${r.fds_b_before}->${r.fds_b_after}`,
      ]),
    ]);
    return {
      name: "load",
      json: { concurrency: count, daemon_args: LOAD_DAEMON_ARGS, techniques: rows },
      table: [`Load: ${count} concurrent attempts per technique, one daemon pair`, ...table],
    };
  };
}

/** The section `tests/bench/main.ts` runs: 1,000 attempts at once per technique (50 with --quick). */
export const section: Section = loadSection();

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** Runs a section alone with the bench's command line; prints its table, writes its JSON. */
export async function runAlone(make: (count: number | undefined) => Section): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string" },
      quick: { type: "boolean" },
      json: { type: "string" },
      count: { type: "string" },
    },
  });
  const log = (line: string) => Deno.stderr.writeSync(encoder.encode(`${line}\n`));
  const section = make(values.count === undefined ? undefined : Number(values.count));
  const result = await section({
    trials: Number(values.trials ?? 50),
    quick: values.quick ?? false,
    log,
  });
  Deno.stdout.writeSync(encoder.encode(`${result.table.join("\n")}\n`));
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify({ [result.name]: result.json }, null, 2));
  }
}

if (import.meta.main) {
  const techniques = Deno.env.get("LOAD_TECHNIQUES")?.split(",") as TechniqueChoice[] | undefined;
  await runAlone((count) =>
    loadSection({
      ...(count === undefined ? {} : { count }),
      ...(techniques === undefined ? {} : { techniques }),
    })
  );
}
