/**
 * Measures how long the lab NATs keep an idle punched path: run by hand as
 * root, `deno run -A tests/lab/expiry.ts` (about 2.5 minutes; not a test).
 *
 * It prints the routers' conntrack timeout sysctls, then punches UDP paths
 * with punchd through two "preserving" NATs and lets each idle for a
 * different time before host A sends one datagram: it arrives at host B
 * (the path lived) or not (a NAT forgot it). Two kinds of path:
 *
 * - "single": one datagram each way right after the punch, then silence;
 * - "stream": one datagram each way, another pair 3 s later, then silence
 *   (Linux conntrack calls a UDP flow a stream, and keeps it longer, once it
 *   sees traffic more than 2 s after the flow began and after a reply).
 *
 * Each path sends at most 5 datagrams; all idle in parallel. TCP's idle
 * limit (nf_conntrack_tcp_timeout_established, 5 days by default) is read,
 * not waited for.
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import { conntrackEntries, readSysctls } from "./conntrack.ts";
import type { Lab } from "./lab.ts";
import { punch, withLab } from "./punch.ts";

/** Idle times tried, in seconds, per kind of path (the defaults are 30 s and 120 s). */
const IDLE_SECS = {
  single: [26, 29, 31, 34],
  stream: [114, 119, 121, 126],
} as const;

/** How long B waits for the datagram after the idle time. */
const ARRIVAL_MS = 2000;

type Kind = keyof typeof IDLE_SECS;

interface PathResult {
  kind: Kind;
  idleSecs: number;
  arrived: boolean;
  /** Router A's entry just before the idle time began: seconds left and whether it is assured. */
  before: string;
}

const bytes = (s: string) => new TextEncoder().encode(s);
const out = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** True when `to` receives a datagram holding `text` within `ms`. */
async function receives(to: Socket, text: string, ms: number): Promise<boolean> {
  const signal = AbortSignal.timeout(ms);
  const buf = new Uint8Array(2048);
  for (;;) {
    let n: number;
    try {
      n = await to.read(buf, signal);
    } catch {
      return false;
    }
    if (new TextDecoder().decode(buf.subarray(0, n)) === text) return true;
  }
}

/** One datagram each way; throws if either is lost (the path must be fresh and working). */
async function exchange(a: Socket, b: Socket, label: string): Promise<void> {
  await a.write(bytes(`${label} a`));
  if (!(await receives(b, `${label} a`, 3000))) throw new Error(`${label}: A to B lost`);
  await b.write(bytes(`${label} b`));
  if (!(await receives(a, `${label} b`, 3000))) throw new Error(`${label}: B to A lost`);
}

/** Describes router A's entry for host A's port `port`. */
async function entryOf(lab: Lab, port: number): Promise<string> {
  const entries = await conntrackEntries(lab, lab.routerA.ns, "udp", port, port + 10000);
  return entries.map((e) => `${e.timeoutSecs} s left${e.assured ? ", assured" : ""}`).join("; ") ||
    "none";
}

/** Punches path `n`, primes it as `kind`, idles `idleSecs` and tries one datagram A to B. */
async function measure(
  lab: Lab,
  sockets: { a: Socket; b: Socket },
  n: number,
  kind: Kind,
  idleSecs: number,
): Promise<PathResult> {
  const { a, b } = sockets;
  await exchange(a, b, `first ${n}`);
  if (kind === "stream") {
    await sleep(3000);
    await exchange(a, b, `second ${n}`);
  }
  const before = await entryOf(lab, 20000 + n);
  await sleep(idleSecs * 1000);
  await a.write(bytes(`after ${n}`));
  const arrived = await receives(b, `after ${n}`, ARRIVAL_MS);
  return { kind, idleSecs, arrived, before };
}

async function main(): Promise<void> {
  if (Deno.uid() !== 0) throw new Error("Cannot measure: network namespaces need root");
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    const sysctls = await readSysctls(lab, lab.routerA.ns);
    out("Router conntrack timeouts (router A; router B is the same):");
    for (const [key, value] of sysctls) out(`  ${key} = ${value}`);
    const plan = (Object.keys(IDLE_SECS) as Kind[]).flatMap((kind) =>
      IDLE_SECS[kind].map((idleSecs) => ({ kind, idleSecs }))
    );
    // Punch every path first (quickly, one after another), then let them all idle at once.
    const punched: { a: Socket; b: Socket }[] = [];
    try {
      for (let n = 0; n < plan.length; n++) {
        const { a, b } = await punch(clientA, clientB, lab, "udp", n);
        punched.push({ a, b });
      }
      const longest = Math.max(...plan.map((p) => p.idleSecs));
      out(`Punched ${plan.length} udp paths; idling up to ${longest} s ...`);
      const results = await Promise.all(
        plan.map((p, n) => measure(lab, punched[n]!, n, p.kind, p.idleSecs)),
      );
      out("\nkind    idle  datagram after idle  router A entry when idling began");
      for (const r of results) {
        out(
          `${r.kind.padEnd(7)} ${String(r.idleSecs).padStart(4)} s  ${
            (r.arrived ? "arrived" : "lost").padEnd(19)
          }  ${r.before}`,
        );
      }
      const tcp = sysctls.get("net.netfilter.nf_conntrack_tcp_timeout_established");
      out(
        `\ntcp: an established connection idles out after ${tcp} s (read, not waited for)`,
      );
    } finally {
      for (const { a, b } of punched) {
        a.close();
        b.close();
      }
    }
  });
}

if (import.meta.main) await main();
