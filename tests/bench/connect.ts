/**
 * Bench section `connect`: time to connect per technique and NAT pair,
 * against the floor the path allows.
 *
 * Each pair gets its own lab (lab_pair.ts); in it every technique runs
 * `trials` attempts, interleaved: trial i runs each technique once, starting
 * at a different technique each trial, so a slow minute of a busy machine
 * falls on every technique alike. An attempt is timed from the moment the
 * initiator's `initiate` is sent to the moment both sides' sockets have
 * arrived (`ok` on both control connections); endpoint discovery before
 * it is not timed. An attempt counts as a success only over a verified
 * direct path: each side's socket is connected to the other NAT's public
 * address, and data crosses it both ways. A technique that fails its first
 * {@linkcode GIVE_UP_AFTER} attempts in a pair is not tried further there
 * (it cannot connect on that path; its failures would only cost the
 * attempt timeout each). Before the trials each technique runs one attempt
 * that is not counted (reported as `coldMs`): the first attempt of a
 * technique starts its worker in the daemon, which later attempts find
 * running (`--worker-idle`, 30 s).
 *
 * ## The floor
 *
 * floor = round trips × RTT + {@linkcode PROCESSING_MS}, with the RTT measured
 * in the same lab before and after the trials (lab_pair.ts: the mean of the
 * two). ratio = median / floor.
 *
 * Round trips are counted from the protocols as implemented (the diagrams in
 * src/techniques/*.ts), from the moment the technique's first packet that
 * has to cross the whole path can leave, to the moment both sides report
 * ok; d is one one-way trip (RTT / 2). In this bench the progress lines
 * travel through the bench's own process (tests/lab/punch.ts relays them
 * between the two control connections directly, no rendezvous server), so
 * they cost no network trip; low-TTL packets that only open the sender's
 * own NAT are not waited for. Through a rendezvous server each relayed line
 * that a side waits for adds about one d more ({@linkcode ROUND_TRIPS}'s
 * `viaRendezvous`).
 *
 * - `tcp-nutss` 3 RTT: B's SYN reaches A (d), A's SYN-ACK reaches B (2d, B
 *   established), B's ACK reaches A (3d, A established), then the
 *   confirmation (tcp_confirm.ts) "initiator" (4d), "responder" (5d, A ok
 *   after writing "initiator-done"), "initiator-done" (6d, B ok). Relayed:
 *   one line (A's offer) before B's SYN: +0.5.
 * - `tcp-syni` 2.5 RTT: A's re-injected SYN reaches B (d, captured), B's
 *   SYN-ACK reaches A (2d, A established; its ACK and "initiator" leave at
 *   once), both reach B (3d), "responder" (4d, A ok), "initiator-done" (5d,
 *   B ok). Relayed: two lines (A's offer, B's `syniready`): +1.
 * - `tcp-prime` 1.5 RTT: A's SYN reaches B's primed socket (d,
 *   simultaneous open), B's SYN-ACK reaches A (2d, A established: ok), A's
 *   ACK reaches B (3d, B established: ok). No confirmation. Relayed: two
 *   lines (`prime1`, `primed1`): +1.
 * - `udp` 2 RTT (hand-over on the other's LAST punch, udp.ts): B's first
 *   full-TTL punch reaches A (d; A's low-TTL punches opened its NAT), A
 *   answers with a SEEN punch echoing B's nonce (2d: B done, sends its
 *   LAST), B's LAST reaches A (3d: A done, sends its LAST, and holds B's:
 *   A hands over), A's LAST reaches B (4d: B hands over). A fallback wait
 *   (when a LAST is lost) is no round trip and so not in the floor.
 *   Relayed: one line (A's offer) before B's punch: +0.5.
 * - `udp-birthday` (A easy, B endpoint-dependent) 2 RTT, as `udp` once a
 *   probe of A's hits one of B's open ports (d), with the roles swapped: B's
 *   SEEN punch (2d: A done), A's LAST (3d: B hands over), B's LAST (4d: A
 *   hands over). The search before the hit is not a round trip: with 256
 *   ports open in 64,512 and 1,000 probes a second it takes about 252
 *   probes, 0.25 s, on average (udp.ts), and the floor leaves it out.
 * - `auto` the floor of the technique that won (most often, in this cell).
 *   Its hellos (`auto1i`, then `auto1r`, which the initiator waits for
 *   before its first step) and the winner's `w<K>` are progress lines: no
 *   network trip here; relayed, the hellos add 1 RTT before the first step,
 *   and `w<K>` up to 0.5 more where the responder has to wait for it.
 *
 * ```
 * sudo deno run --allow-all tests/bench/connect.ts --trials 3 --quick --json /tmp/connect.json
 * sudo deno run --allow-all tests/bench/connect.ts --trials 5 --pairs preserving:preserving
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Attempt, PunchdClient } from "../../src/client/client.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import type { NatProfile } from "../lab/lab.ts";
import { punch } from "../lab/punch.ts";
import { readExactly } from "../helpers/daemon.ts";
import { type LabPair, type RttMeasurement, withLabPair } from "./lab_pair.ts";
import {
  alignTable,
  type BenchContext,
  median,
  percentile,
  type Section,
  type SectionResult,
} from "./section.ts";

/** The techniques this section times. */
export type ConnectTechnique =
  | "tcp-nutss"
  | "tcp-syni"
  | "tcp-prime"
  | "udp"
  | "udp-birthday"
  | "auto";

/** Round trips a single technique needs (see the module doc for the counting). */
export interface RoundTrips {
  /** In this bench: progress lines relayed in-process, at no network cost. */
  bench: number;
  /** With every progress line a side waits for relayed through a rendezvous server. */
  viaRendezvous: number;
}

/** Round trips per single technique, counted in the module doc. */
export const ROUND_TRIPS: Record<Exclude<ConnectTechnique, "auto">, RoundTrips> = {
  "tcp-nutss": { bench: 3, viaRendezvous: 3.5 },
  "tcp-syni": { bench: 2.5, viaRendezvous: 3.5 },
  "tcp-prime": { bench: 1.5, viaRendezvous: 2.5 },
  udp: { bench: 2, viaRendezvous: 2.5 },
  "udp-birthday": { bench: 2, viaRendezvous: 2.5 },
};

/** Processing time the floor allows for (both daemons, both clients), milliseconds. */
export const PROCESSING_MS = 2;

/** Attempts without a success after which a technique is not tried further in a pair. */
export const GIVE_UP_AFTER = 3;

/** One NAT pair and the techniques timed on it. */
export interface ConnectPair {
  a: NatProfile;
  b: NatProfile;
  techniques: ConnectTechnique[];
}

const COMMON: ConnectTechnique[] = ["tcp-nutss", "tcp-syni", "tcp-prime", "udp", "auto"];

/** The pairs: both silent port-preserving, one side endpoint-dependent, both answering. */
export const CONNECT_PAIRS: readonly ConnectPair[] = [
  { a: "preserving", b: "preserving", techniques: COMMON },
  { a: "preserving", b: "symmetric", techniques: [...COMMON, "udp-birthday"] },
  { a: "answering", b: "answering", techniques: COMMON },
];

/** The floor in milliseconds: `roundTrips` × `rttMs` + {@linkcode PROCESSING_MS}. */
export function floorMs(roundTrips: number, rttMs: number): number {
  if (!(roundTrips >= 0) || !(rttMs >= 0)) {
    throw new RangeError(`Cannot compute a floor of ${roundTrips} round trips at ${rttMs} ms`);
  }
  return roundTrips * rttMs + PROCESSING_MS;
}

/** One timed attempt. */
export interface Trial {
  ok: boolean;
  /** Milliseconds from initiate to both sides' ok (to the failure, for a failure). */
  ms: number;
  /** For `auto`: the technique that connected. */
  winner?: string | null;
  /** For a failure: its short reason. */
  error?: string;
  /** For a success: when each step happened, ms after initiate (see {@linkcode Phases}). */
  phases?: Phases;
}

/** Steps of a successful attempt, ms after `initiate` was sent. */
export interface Phases {
  /** The initiator's first progress line (its offer) reached the application. */
  offerMs: number;
  /** The initiator's socket arrived. */
  aOkMs: number;
  /** The responder's socket arrived. */
  bOkMs: number;
}

/** A technique's results on one pair. */
export interface ConnectCell {
  technique: ConnectTechnique;
  attempts: number;
  successes: number;
  /** Median and p95 of the successes' times, ms; null without successes. */
  medianMs: number | null;
  p95Ms: number | null;
  /** Round trips the floor counts (the winner's most often, for auto); null when unknown. */
  roundTrips: number | null;
  floorMs: number | null;
  /** median / floor. */
  ratio: number | null;
  /** Failure reasons and how often each happened. */
  errors: Record<string, number>;
  /** For auto: which technique won, how often. */
  winners: Record<string, number>;
  /** Not tried further after {@linkcode GIVE_UP_AFTER} failures without a success. */
  stopped: boolean;
  /** Every success's time, ms, in the order run. */
  times: number[];
  /** Medians of the successes' {@linkcode Phases}; null without successes. */
  phasesMs: Phases | null;
  /**
   * The uncounted first attempt's time (it starts the technique's worker in the daemon), ms;
   * null when it failed or was not run.
   */
  coldMs?: number | null;
}

/** The round trips of `technique`'s floor; for auto those of the winner seen most often. */
export function roundTripsOf(
  technique: ConnectTechnique,
  winners: Record<string, number>,
): number | null {
  if (technique !== "auto") return ROUND_TRIPS[technique].bench;
  const top = Object.entries(winners).sort((x, y) => y[1] - x[1])[0]?.[0];
  if (top === undefined || !(top in ROUND_TRIPS)) return null;
  return ROUND_TRIPS[top as keyof typeof ROUND_TRIPS].bench;
}

/** The median of one phase over the successes that recorded it (0.01 ms). */
function phaseMedian(trials: readonly Trial[], key: keyof Phases): number {
  const values = trials.flatMap((t) => t.phases === undefined ? [] : [t.phases[key]]);
  return Math.round(median(values.filter(Number.isFinite)) * 100) / 100;
}

/** Folds one technique's trials on a pair into its cell (rounded to 0.01 ms). */
export function foldCell(
  technique: ConnectTechnique,
  trials: readonly Trial[],
  rttMs: number,
  stopped = false,
): ConnectCell {
  const round = (v: number) => Math.round(v * 100) / 100;
  const times = trials.filter((t) => t.ok).map((t) => t.ms);
  const errors: Record<string, number> = {};
  const winners: Record<string, number> = {};
  for (const t of trials) {
    if (!t.ok) errors[t.error ?? "failed"] = (errors[t.error ?? "failed"] ?? 0) + 1;
    if (t.ok && t.winner) winners[t.winner] = (winners[t.winner] ?? 0) + 1;
  }
  const medianMs = times.length === 0 ? null : round(median(times));
  const roundTrips = roundTripsOf(technique, winners);
  const floor = roundTrips === null ? null : round(floorMs(roundTrips, rttMs));
  return {
    technique,
    attempts: trials.length,
    successes: times.length,
    medianMs,
    p95Ms: times.length === 0 ? null : round(percentile(times, 95)),
    roundTrips,
    floorMs: floor,
    ratio: medianMs === null || floor === null ? null : round(medianMs / floor),
    errors,
    winners,
    stopped,
    times: times.map(round),
    phasesMs: times.length === 0 ? null : {
      offerMs: phaseMedian(trials, "offerMs"),
      aOkMs: phaseMedian(trials, "aOkMs"),
      bOkMs: phaseMedian(trials, "bOkMs"),
    },
  };
}

/** The order of trial `trial` over `count` techniques: a rotation, a new start each trial. */
export function trialOrder(trial: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => (trial + i) % count);
}

/** Times when `initiate` was sent and each side's socket arrived (performance.now()). */
interface Marks {
  start?: number;
  /** The initiator's first progress line reached the bench (the responder is asked next). */
  offer?: number;
  a?: number;
  b?: number;
}

/**
 * `client` as punch() sees it, except that its initiate (or respond) also
 * records when the request went out, when the initiator's first progress
 * line arrived, and when the attempt's socket arrived.
 */
function timedClient(client: PunchdClient, marks: Marks, side: "a" | "b"): PunchdClient {
  const watch = (attempt: Attempt) => {
    attempt.socket.then(() => marks[side] = performance.now(), () => {});
    if (side === "b") return attempt;
    const progress: AsyncIterable<string> = {
      [Symbol.asyncIterator]: () => {
        const lines = attempt.progress[Symbol.asyncIterator]();
        return {
          next: async () => {
            const line = await lines.next();
            if (!line.done) marks.offer ??= performance.now();
            return line;
          },
        };
      },
    };
    return new Proxy(attempt, {
      get: (target, property) => {
        if (property === "progress") return progress;
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  };
  return new Proxy(client, {
    get(target, property) {
      if (property === "initiate") {
        return (params: Parameters<PunchdClient["initiate"]>[0]) => {
          marks.start = performance.now();
          return watch(target.initiate(params));
        };
      }
      if (property === "respond") {
        return (params: Parameters<PunchdClient["respond"]>[0]) => watch(target.respond(params));
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** The short reason of a failed attempt. */
function reasonOf(error: unknown): string {
  const text = error instanceof Error ? error.message.split("\n")[0] ?? "" : String(error);
  return text.replace(/^punchd refused \S+: /, "").slice(0, 120);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The address part of a socket address ("" for a unix one). */
function addressOf(address: SocketAddress): string {
  return address.family === "unix" ? "" : address.address;
}

/** Reads datagrams until `text` arrives (late punches are skipped), at most 20 or 2 s. */
async function readDatagram(socket: Socket, text: string): Promise<void> {
  const buf = new Uint8Array(2048);
  const signal = AbortSignal.timeout(2000);
  for (let i = 0; i < 20; i++) {
    const n = await socket.read(buf, signal);
    if (decoder.decode(buf.subarray(0, n)) === text) return;
  }
  throw new Error(`Cannot read "${text}": 20 other datagrams came first`);
}

/**
 * Checks the path the way a user would: each socket is connected to the
 * other NAT's public address, and a message crosses each way.
 */
async function verifyDirect(a: Socket, b: Socket, pair: LabPair, udp: boolean): Promise<void> {
  const seenByA = addressOf(a.peerAddress());
  const seenByB = addressOf(b.peerAddress());
  if (seenByA !== pair.lab.publicB || seenByB !== pair.lab.publicA) {
    throw new Error(
      `not a direct path: A's socket is connected to ${seenByA} (B's NAT is ${pair.lab.publicB}), B's to ${seenByB} (A's NAT is ${pair.lab.publicA})`,
    );
  }
  for (const [from, to, text] of [[a, b, "bench a->b"], [b, a, "bench b->a"]] as const) {
    await from.write(encoder.encode(text));
    if (udp) await readDatagram(to, text);
    else if (decoder.decode(await readExactly(to, text.length)) !== text) {
      throw new Error(`Cannot read "${text}" across the punched connection`);
    }
  }
}

/** How long past the daemons' attempt timeout an attempt counts as hung. */
const HANG_MARGIN_MS = 10_000;

/** Runs one timed attempt on `pair` with the clients `clients` (replaced after a hang). */
async function timeAttempt(
  pair: LabPair,
  clients: { a: PunchdClient; b: PunchdClient },
  technique: ConnectTechnique,
  n: number,
  timeoutS: number,
): Promise<Trial> {
  const marks: Marks = {};
  const started = performance.now();
  const elapsed = () => performance.now() - (marks.start ?? started);
  const attempt = punch(
    timedClient(clients.a, marks, "a"),
    timedClient(clients.b, marks, "b"),
    pair.lab,
    technique,
    n,
  );
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<"hung">((resolve) => {
    timer = setTimeout(() => resolve("hung"), timeoutS * 1000 + HANG_MARGIN_MS);
  });
  try {
    const outcome = await Promise.race([attempt, hung]);
    if (outcome === "hung") {
      attempt.then((o) => (o.a.close(), o.b.close()), () => {});
      await Promise.all([clients.a.close(), clients.b.close()]);
      clients.a = await PunchdClient.connect(pair.daemonA.socketPath);
      clients.b = await PunchdClient.connect(pair.daemonB.socketPath);
      return { ok: false, ms: elapsed(), error: "hung (clients closed to cancel it)" };
    }
    try {
      if (marks.start === undefined || marks.a === undefined || marks.b === undefined) {
        throw new Error("Cannot time the attempt: a mark is missing");
      }
      const ms = Math.max(marks.a, marks.b) - marks.start;
      const phases = {
        offerMs: (marks.offer ?? NaN) - marks.start,
        aOkMs: marks.a - marks.start,
        bOkMs: marks.b - marks.start,
      };
      await verifyDirect(outcome.a, outcome.b, pair, technique.startsWith("udp"));
      return { ok: true, ms, winner: outcome.winner, phases };
    } finally {
      outcome.a.close();
      outcome.b.close();
    }
  } catch (error) {
    return { ok: false, ms: elapsed(), error: reasonOf(error) };
  } finally {
    clearTimeout(timer);
  }
}

/** One pair's results. */
export interface ConnectPairResult {
  a: NatProfile;
  b: NatProfile;
  rttBefore: RttMeasurement;
  rttAfter: RttMeasurement;
  /** The RTT the floors use: the mean of before and after, ms. */
  rttMs: number;
  cells: ConnectCell[];
}

/** Runs every technique of `spec` `trials` times, interleaved, in one lab. */
export async function measureConnectPair(
  spec: ConnectPair,
  trials: number,
  context: BenchContext,
  timeoutS: number,
): Promise<ConnectPairResult> {
  return await withLabPair(
    { a: spec.a, b: spec.b, daemonArgs: ["--attempt-timeout", String(timeoutS)] },
    async (pair) => {
      const rttBefore = await pair.rtt();
      const clients = { a: pair.clientA, b: pair.clientB };
      const results = spec.techniques.map(() => [] as Trial[]);
      const stopped = spec.techniques.map(() => false);
      const cold: Trial[] = [];
      let n = 0;
      try {
        // One attempt per technique that is not counted: it starts the technique's worker.
        for (const technique of spec.techniques) {
          cold.push(await timeAttempt(pair, clients, technique, n++, timeoutS));
          await new Promise((r) => setTimeout(r, 20));
        }
        for (let trial = 0; trial < trials; trial++) {
          for (const k of trialOrder(trial, spec.techniques.length)) {
            const done = results[k] as Trial[];
            if (stopped[k]) continue;
            const technique = spec.techniques[k] as ConnectTechnique;
            done.push(await timeAttempt(pair, clients, technique, n++, timeoutS));
            if (done.length >= GIVE_UP_AFTER && trials > done.length && done.every((t) => !t.ok)) {
              stopped[k] = true;
              context.log(`${spec.a}:${spec.b} ${technique}: ${done.length} failures, stopped`);
            }
            // Let the daemons finish the last attempt's clean-up before the next one starts.
            await new Promise((r) => setTimeout(r, 20));
          }
          context.log(`${spec.a}:${spec.b}: trial ${trial + 1}/${trials}`);
        }
      } finally {
        if (clients.a !== pair.clientA) await Promise.all([clients.a.close(), clients.b.close()]);
      }
      const rttAfter = await pair.rtt();
      const rttMs = (rttBefore.rttMs + rttAfter.rttMs) / 2;
      return {
        a: spec.a,
        b: spec.b,
        rttBefore,
        rttAfter,
        rttMs,
        cells: spec.techniques.map((t, k) => ({
          ...foldCell(t, results[k] as Trial[], rttMs, stopped[k] as boolean),
          coldMs: cold[k]?.ok ? Math.round((cold[k]?.ms ?? 0) * 100) / 100 : null,
        })),
      };
    },
  );
}

/** The section's printed lines for `pairs`. */
export function connectTable(pairs: readonly ConnectPairResult[], trials: number): string[] {
  const fixed = (v: number | null, digits = 1) => v === null ? "-" : v.toFixed(digits);
  const rows: string[][] = [[
    "pair",
    "technique",
    "ok",
    "median ms",
    "p95 ms",
    "RTTs",
    "floor ms",
    "ratio",
    "offer/A/B ms",
    "cold ms",
    "note",
  ]];
  for (const p of pairs) {
    for (const c of p.cells) {
      const notes: string[] = [];
      const top = Object.entries(c.winners).map(([w, k]) => `${w} ${k}`).join(", ");
      if (top !== "") notes.push(`won: ${top}`);
      if (c.technique === "udp-birthday") notes.push("floor without the port search");
      if (c.stopped) notes.push("stopped");
      const error = Object.entries(c.errors).sort((x, y) => y[1] - x[1])[0];
      if (error !== undefined) notes.push(`${error[1]}x ${error[0].slice(0, 60)}`);
      rows.push([
        `${p.a}:${p.b}`,
        c.technique,
        `${c.successes}/${c.attempts}`,
        fixed(c.medianMs),
        fixed(c.p95Ms),
        c.roundTrips === null ? "-" : String(c.roundTrips),
        fixed(c.floorMs, 2),
        fixed(c.ratio, 2),
        c.phasesMs === null
          ? "-"
          : [c.phasesMs.offerMs, c.phasesMs.aOkMs, c.phasesMs.bOkMs].map((v) => fixed(v)).join("/"),
        fixed(c.coldMs ?? null),
        notes.join("; "),
      ]);
    }
  }
  const rtts = pairs.map((p) =>
    `${p.a}:${p.b} ${Number.isNaN(p.rttMs) ? "-" : (p.rttMs * 1000).toFixed(0)} µs`
  ).join(", ");
  return [
    `Time to connect: initiate to both sides' ok, verified direct path; ${trials} trials per cell, interleaved`,
    `floor = round trips x RTT + ${PROCESSING_MS} ms; offer/A/B: medians of A's first progress, A's ok, B's ok after initiate; RTT (kernel handshake RTT, both legs): ${rtts}`,
    ...alignTable(rows),
  ];
}

/** The section over `specs` (the bench runs every pair of {@linkcode CONNECT_PAIRS}). */
export async function runConnect(
  context: BenchContext,
  specs: readonly ConnectPair[] = CONNECT_PAIRS,
): Promise<SectionResult> {
  const timeoutS = context.quick ? 5 : 10;
  const pairs: ConnectPairResult[] = [];
  for (const spec of specs) {
    context.log(`connect: ${spec.a}:${spec.b}, ${context.trials} trials`);
    try {
      pairs.push(await measureConnectPair(spec, context.trials, context, timeoutS));
    } catch (error) {
      // The lab or its daemons did not come up: the pair's cells say so, the other pairs run.
      const reason = `lab: ${reasonOf(error)}`;
      context.log(`connect: ${spec.a}:${spec.b}: ${reason}`);
      const none: RttMeasurement = { rttMs: NaN, legAMs: NaN, legBMs: NaN, probes: 0, lost: 0 };
      pairs.push({
        a: spec.a,
        b: spec.b,
        rttBefore: none,
        rttAfter: none,
        rttMs: NaN,
        cells: spec.techniques.map((t) => ({
          ...foldCell(t, [], 0),
          roundTrips: null,
          floorMs: null,
          errors: { [reason]: 1 },
        })),
      });
    }
  }
  return {
    name: "connect",
    json: {
      trials: context.trials,
      processingMs: PROCESSING_MS,
      attemptTimeoutS: timeoutS,
      roundTrips: ROUND_TRIPS,
      pairs,
    },
    table: connectTable(pairs, context.trials),
  };
}

/** The section: every pair of {@linkcode CONNECT_PAIRS}. */
export const section: Section = (context: BenchContext): Promise<SectionResult> =>
  runConnect(context);

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string" },
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      pairs: { type: "string" },
    },
  });
  const specs = values.pairs === undefined ? CONNECT_PAIRS : values.pairs.split(",").map((name) => {
    const spec = CONNECT_PAIRS.find((p) => `${p.a}:${p.b}` === name);
    if (spec === undefined) {
      throw new SyntaxError(
        `--pairs: unknown pair "${name}"; known: ${
          CONNECT_PAIRS.map((p) => `${p.a}:${p.b}`).join(", ")
        }`,
      );
    }
    return spec;
  });
  const text = values.trials ?? (values.quick ? "3" : "50");
  if (!/^[1-9][0-9]*$/.test(text)) {
    throw new RangeError(`--trials: ${text} is not a positive integer`);
  }
  const trials = Number(text);
  const result = await runConnect({
    trials,
    quick: values.quick,
    log: (line) => Deno.stderr.writeSync(encoder.encode(`${line}\n`)),
  }, specs);
  Deno.stdout.writeSync(encoder.encode(result.table.join("\n") + "\n"));
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(result.json, null, 2) + "\n");
  }
}
