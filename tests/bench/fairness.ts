/**
 * Fairness of the control socket (issue 12): one client must not push another
 * client's request latency up. A bystander asks one thing at a time and times
 * each request from its write to the first reply line, first with the daemon
 * idle, then while hostile clients load it:
 *
 * - `attempts`: 8 clients keep 32 attempts in flight each (initiate, cancel on
 *   the first progress, initiate again on the cancellation), in the same
 *   technique worker as the bystander's own attempts;
 * - `status`: 8 clients keep 32 `status` requests in flight each;
 * - `flood`: 8 clients write pipelined bad requests as fast as the daemon
 *   takes them and read their replies as they come.
 *
 * The bystander asks `status|ID` (answered by the daemon's main thread),
 * `initiate` of a `tcp-direct` attempt, timed to its first `progress` (the
 * attempt's start travels through the same technique worker as the load's,
 * and its initiator asks the firewall for a guard first, as the load's do),
 * and `initiate` of a `udp` attempt (a worker of its own, no firewall: what is
 * left is the daemon's main thread).
 *
 * The load runs in another process (this module with `--load`), so the
 * bystander's timing does not wait for the load clients' own work. The
 * daemon runs in a void network namespace (tests/helpers/void_ns.ts): attempts
 * wait for a peer that never answers, and its nftables table stays there.
 * Needs root.
 *
 * Run alone: `deno run -A tests/bench/fairness.ts [--trials N] [--quick] [--json FILE]` (requests
 * per cell: 50 with `--quick`, else the larger of N and 2000 `status`, 200 `initiate`; the
 * bystander's attempts are {@linkcode INITIATE_PAUSE_MS} apart, and each load runs
 * {@linkcode LOAD_WARMUP_MS} before the timing starts).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { rawConnect, startDaemon } from "../helpers/daemon.ts";
import { VOID_LOCAL, VOID_PEER, withVoidNamespace } from "../helpers/void_ns.ts";
import type { Socket } from "../../ffi/socket.ts";
import {
  alignTable,
  type BenchContext,
  percentile,
  type Section,
  type SectionResult,
} from "./section.ts";

/** What the hostile clients do. */
export type LoadKind = "none" | "attempts" | "status" | "flood";
/** What the bystander asks. */
export type AskKind = "status" | "initiate" | "initiate-udp";

/**
 * Milliseconds the bystander waits between its attempts: a client that starts attempts now and
 * then (10 a second at most), while each load client starts as many as the daemon lets it (the
 * daemon's 200 starts a second, `--start-rate`, shared: about 25 each). Attempt starts are paced
 * (src/control/pacer.ts), and a client that asks as often as every load client does gets its
 * fair share, one start in nine, not the next one.
 */
const INITIATE_PAUSE_MS = 100;

/** Milliseconds a load runs before the bystander starts timing. */
const LOAD_WARMUP_MS = 2000;

/** The load process's niceness (see startLoad). */
const LOAD_NICE = 10;

const LOAD_CLIENTS = 8;
const LOAD_DEPTH = 32;
/** The technique of every attempt here: no firewall needed, a worker of its own. */
const TECHNIQUE = "tcp-direct";

const encoder = new TextEncoder();

/** Splits a stream socket's bytes into lines. */
class LineReader {
  readonly #socket: Socket;
  readonly #buf = new Uint8Array(65536);
  readonly #decoder = new TextDecoder();
  #pending = "";
  #lines: string[] = [];

  constructor(socket: Socket) {
    this.#socket = socket;
  }

  /** The next line; throws at end of stream. */
  async next(signal?: AbortSignal): Promise<string> {
    while (this.#lines.length === 0) {
      const n = await this.#socket.read(this.#buf, signal);
      if (n === 0) throw new Error("Cannot read a reply: punchd closed the connection");
      this.#pending += this.#decoder.decode(this.#buf.subarray(0, n), { stream: true });
      const parts = this.#pending.split("\n");
      this.#pending = parts.pop() ?? "";
      this.#lines.push(...parts);
    }
    return this.#lines.shift() as string;
  }
}

/**
 * One bystander measurement: milliseconds from each request to its first reply line, and why
 * it stopped early (a reply that did not come within 10 s, or a wrong one).
 */
async function bystander(
  path: string,
  ask: AskKind,
  count: number,
  pauseMs = 0,
): Promise<{ times: number[]; error?: string }> {
  const socket = await rawConnect(path);
  const reader = new LineReader(socket);
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const id = `by${i}`;
      const technique = ask === "initiate-udp" ? "udp" : TECHNIQUE;
      const line = ask === "status"
        ? `status|${id}\n`
        : `initiate|${id}|${technique}|${VOID_LOCAL}|${29000 + (i % 100)}|${VOID_PEER}|${
          39000 + (i % 100)
        }\n`;
      const started = performance.now();
      await socket.write(encoder.encode(line));
      const reply = await reader.next(AbortSignal.timeout(10_000));
      times.push(performance.now() - started);
      const expected = ask === "status" ? `status|${id}|` : `progress|${id}|`;
      if (!reply.startsWith(expected)) throw new Error(`Bystander got ${reply}`);
      if (ask !== "status") {
        await socket.write(encoder.encode(`cancel|${id}\n`));
        const end = await reader.next(AbortSignal.timeout(10_000));
        if (end !== `error|${id}|cancelled: by client`) throw new Error(`Bystander got ${end}`);
      }
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  } catch (error) {
    const why = error instanceof DOMException && error.name === "TimeoutError"
      ? `no reply within 10 s after ${times.length} requests`
      : (error as Error).message;
    return { times, error: why };
  } finally {
    socket.close();
  }
  return { times };
}

/** Waits until the daemon runs no attempt (a finished load's cancellations take a moment). */
async function waitIdle(path: string): Promise<void> {
  const socket = await rawConnect(path);
  const reader = new LineReader(socket);
  try {
    for (let i = 0; i < 200; i++) {
      await socket.write(encoder.encode(`status|idle${i}\n`));
      const reply = await reader.next(AbortSignal.timeout(10_000));
      const json = JSON.parse(reply.slice(reply.indexOf("|", 7) + 1)) as { attempts: number };
      if (json.attempts === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("Cannot measure: the daemon still runs the previous load's attempts");
  } finally {
    socket.close();
  }
}

/**
 * The hostile side, run in its own process: `clients` connections loading
 * the daemon at `path` as `kind` says until stdin closes. Prints `ready` once
 * every client has its requests in flight, and the replies it read at the end.
 */
async function runLoad(
  path: string,
  kind: LoadKind,
  clients: number,
  depth: number,
  offset: number,
) {
  const stop = new AbortController();
  let replies = 0;
  let ready = 0;
  const signalReady = () => {
    if (++ready === clients) Deno.stdout.writeSync(encoder.encode("ready\n"));
  };
  const one = async (c: number) => {
    const socket = await rawConnect(path);
    const reader = new LineReader(socket);
    const port = (slot: number, base: number) => base + offset + c * depth + slot;
    const initiate = (slot: number, round: number) =>
      `initiate|l${c}s${slot}r${round}|${TECHNIQUE}|${VOID_LOCAL}|${
        port(slot, 20000)
      }|${VOID_PEER}|${port(slot, 40000)}\n`;
    try {
      if (kind === "attempts") {
        const rounds = new Array<number>(depth).fill(0);
        await socket.write(encoder.encode(rounds.map((_, s) => initiate(s, 0)).join("")));
        signalReady();
        while (!stop.signal.aborted) {
          const line = await reader.next(stop.signal);
          replies++;
          const m = line.match(/^(progress|error)\|l\d+s(\d+)r(\d+)\|(.*)$/);
          if (m === null) throw new Error(`Load client got ${line}`);
          const slot = Number(m[2]);
          const id = `l${c}s${slot}r${m[3]}`;
          if (m[1] === "progress") await socket.write(encoder.encode(`cancel|${id}\n`));
          else {
            if (m[4] !== "cancelled: by client") throw new Error(`Load client got ${line}`);
            rounds[slot] = (rounds[slot] ?? 0) + 1;
            await socket.write(encoder.encode(initiate(slot, rounds[slot] ?? 0)));
          }
        }
      } else if (kind === "status") {
        let n = 0;
        await socket.write(
          encoder.encode(Array.from({ length: depth }, () => `status|l${c}n${n++}\n`).join("")),
        );
        signalReady();
        while (!stop.signal.aborted) {
          await reader.next(stop.signal);
          replies++;
          await socket.write(encoder.encode(`status|l${c}n${n++}\n`));
        }
      } else {
        // Bad requests, pipelined as fast as punchd takes them; replies read as they come.
        const chunk = encoder.encode("cancel|nope\n".repeat(1000));
        let failure: unknown = null;
        const drain = (async () => {
          while (!stop.signal.aborted) {
            await reader.next(stop.signal);
            replies++;
          }
        })().catch((error) => failure = error);
        signalReady();
        try {
          while (!stop.signal.aborted) await socket.write(chunk, stop.signal);
        } finally {
          await drain;
        }
        if (failure !== null && !stop.signal.aborted) throw failure;
      }
    } catch (error) {
      if (!stop.signal.aborted) throw error;
    } finally {
      socket.close();
    }
  };
  const running = Array.from({ length: clients }, (_, c) => one(c));
  // Stop when the parent closes stdin.
  for await (const _ of Deno.stdin.readable) { /* wait for end of input */ }
  stop.abort();
  await Promise.allSettled(running);
  Deno.stdout.writeSync(encoder.encode(`replies ${replies}\n`));
}

/** Starts the load process; resolves once its clients are in flight. */
async function startLoad(path: string, kind: LoadKind, offset: number) {
  // The load process runs at a lower priority (nice 10): its own work (making and reading
  // thousands of requests a second) is not the daemon's doing, and on a two-core machine it
  // would otherwise take a core from the daemon and the bystander alike.
  const child = new Deno.Command("nice", {
    args: [
      "-n",
      String(LOAD_NICE),
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-read",
      new URL(import.meta.url).pathname,
      "--load",
      kind,
      "--socket",
      path,
      "--port-offset",
      String(offset),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const nextLine = async () => {
    for (;;) {
      const nl = out.indexOf("\n");
      if (nl >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        return line;
      }
      const { value, done } = await lines.read();
      if (done) return "";
      out += value;
    }
  };
  const stopLoad = async () => {
    await child.stdin.close().catch(() => {});
    const last = await nextLine();
    lines.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const status = await child.status;
    if (!status.success) throw new Error(`the load process exited with ${status.code}`);
    return Number(last.match(/^replies (\d+)$/)?.[1] ?? NaN);
  };
  const first = await nextLine();
  if (first !== "ready") {
    await stopLoad().catch(() => {});
    throw new Error(`the load process did not start: ${first}`);
  }
  return stopLoad;
}

/** One cell of the table. */
interface Cell {
  load: LoadKind;
  ask: AskKind;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Replies the load clients read meanwhile, per second. */
  loadRepliesPerSec: number;
  /** Why the bystander stopped early. */
  error?: string;
}

/** The fairness section of `make bench`. */
export const section: Section = async (context: BenchContext): Promise<SectionResult> => {
  // A p99 needs a few hundred samples: at least 2000 status requests per cell in a full run.
  const count = context.quick ? 50 : Math.max(2000, context.trials);
  const initiates = context.quick ? 50 : Math.max(200, context.trials);
  const cells: Cell[] = [];
  await withVoidNamespace("fair", async (ns) => {
    await using daemon = await startDaemon(
      ["--log-level", "info", "--attempt-timeout", "60", "--max-attempts", "256"],
      undefined,
      ["ip", "netns", "exec", ns],
    );
    // Warm up: the worker and the reactor start on first use.
    await bystander(daemon.socketPath, "initiate", 5);
    await bystander(daemon.socketPath, "initiate-udp", 5);
    let runs = 0;
    for (const load of ["none", "attempts", "status", "flood"] as const) {
      for (const ask of ["status", "initiate", "initiate-udp"] as const) {
        context.log(`fairness: bystander ${ask} under load ${load}`);
        // Each load takes ports of its own: the previous load's cancellations may still hold theirs.
        const offset = LOAD_CLIENTS * LOAD_DEPTH * runs++;
        const stopLoad = load === "none" ? null : await startLoad(daemon.socketPath, load, offset);
        // The load's replies are counted from its start, so its rate is too.
        const started = performance.now();
        // Steady state: the load's first second (its clients' first requests, the pacer's burst,
        // the JIT warming to new code paths) is over before the bystander starts timing.
        if (stopLoad !== null) await new Promise((resolve) => setTimeout(resolve, LOAD_WARMUP_MS));
        let measured: { times: number[]; error?: string };
        let replies = 0;
        try {
          measured = ask === "status"
            ? await bystander(daemon.socketPath, ask, count)
            : await bystander(daemon.socketPath, ask, initiates, INITIATE_PAUSE_MS);
        } finally {
          replies = (await stopLoad?.()) ?? 0;
          await waitIdle(daemon.socketPath);
        }
        const secs = (performance.now() - started) / 1000;
        const { times, error } = measured;
        const cell: Cell = {
          load,
          ask,
          requests: times.length,
          p50Ms: round(percentile(times, 50)),
          p99Ms: round(percentile(times, 99)),
          maxMs: round(Math.max(...times)),
          loadRepliesPerSec: Math.round(replies / secs),
        };
        if (error !== undefined) cell.error = error;
        cells.push(cell);
        context.log(`fairness: ${JSON.stringify(cell)}`);
      }
    }
  });
  const rows = [
    ["load", "bystander asks", "requests", "p50 ms", "p99 ms", "max ms", "load replies/s", "note"],
    ...cells.map((c) => [
      c.load === "none" ? "idle" : `${LOAD_CLIENTS}x${c.load}`,
      c.ask === "status"
        ? "status"
        : c.ask === "initiate"
        ? `initiate ${TECHNIQUE} (to progress)`
        : "initiate udp (to progress)",
      String(c.requests),
      c.p50Ms.toFixed(2),
      c.p99Ms.toFixed(2),
      c.maxMs.toFixed(2),
      String(c.loadRepliesPerSec),
      c.error ?? "",
    ]),
  ];
  return {
    name: "fairness",
    json: { loadClients: LOAD_CLIENTS, loadDepth: LOAD_DEPTH, technique: TECHNIQUE, cells },
    table: [
      `Fairness: a bystander's request latency while ${LOAD_CLIENTS} clients keep ${LOAD_DEPTH} requests in flight each (target p99 <= 5 ms)`,
      ...alignTable(rows),
    ],
  };
};

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string", default: "500" },
      quick: { type: "boolean", default: false },
      json: { type: "string" },
      load: { type: "string" },
      socket: { type: "string" },
      "port-offset": { type: "string", default: "0" },
    },
  });
  if (values.load !== undefined) {
    await runLoad(
      values.socket ?? "",
      values.load as LoadKind,
      LOAD_CLIENTS,
      LOAD_DEPTH,
      Number(values["port-offset"]),
    );
  } else {
    const result = await section({
      trials: Number(values.trials),
      quick: values.quick,
      log: (line) => Deno.stderr.writeSync(encoder.encode(`${line}\n`)),
    });
    Deno.stdout.writeSync(encoder.encode(result.table.join("\n") + "\n"));
    if (values.json !== undefined) {
      await Deno.writeTextFile(
        values.json,
        JSON.stringify({ [result.name]: result.json }, null, 2),
      );
    }
  }
}
