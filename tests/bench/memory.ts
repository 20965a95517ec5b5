/**
 * Memory after a flood: one daemon pair in the lab, attempts in batches (100 at once) to 1,000
 * and then to 10,000 in all (100 and 500 with --quick). At each checkpoint, once the technique
 * worker has stopped for idleness, it records daemon A's resident memory (VmRSS, split into
 * anonymous and file pages), its threads, and its main isolate's heap from a heap snapshot
 * taken through the V8 inspector (the daemon runs with `--inspect` on its namespace's
 * loopback; the snapshot is taken by this file run inside that namespace), and the
 * constructors whose objects grew between the checkpoints.
 *
 * Run alone: `deno run -A tests/bench/memory.ts [--quick] [--json FILE]` (root).
 *
 * @module
 */

import { PunchdClient } from "../../src/client/client.ts";
import { type TechniqueChoice, TECHNIQUES } from "../../src/control/codec.ts";
import { startDaemon } from "../helpers/daemon.ts";
import { Lab } from "../lab/lab.ts";
import { PROBE_PORTS, RENDEZVOUS_PORT, spawnService, waitForOutput } from "../lab/services.ts";
import { concurrentAttempts, type Pair, runAlone } from "./load.ts";
import { alignTable, type BenchContext, type Section } from "./section.ts";

const INSPECTOR_PORT = 9229;
const SELF = new URL(import.meta.url).pathname;

/** Memory figures of a process, in kB, from /proc/PID/status. */
export interface ProcessMemory {
  rss_kb: number;
  anon_kb: number;
  file_kb: number;
  threads: number;
}

/** VmRSS, RssAnon, RssFile and Threads of `pid`. */
export function processMemory(pid: number): ProcessMemory {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => Number(status.match(new RegExp(`${name}:\\s+(\\d+)`))?.[1] ?? 0);
  return {
    rss_kb: field("VmRSS"),
    anon_kb: field("RssAnon"),
    file_kb: field("RssFile"),
    threads: field("Threads"),
  };
}

/** What a heap snapshot holds, by constructor (node type and name): count and self size. */
export interface HeapSummary {
  total_bytes: number;
  nodes: number;
  by_constructor: Record<string, { count: number; bytes: number }>;
}

/** Summarizes a V8 heap snapshot (its JSON) by constructor. */
export function summarizeSnapshot(text: string): HeapSummary {
  const snapshot = JSON.parse(text) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const by: Record<string, { count: number; bytes: number }> = {};
  let total = 0;
  const { nodes, strings } = snapshot;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt] ?? 0] ?? "?";
    const size = nodes[i + sizeAt] ?? 0;
    let name = type === "object" || type === "closure" || type === "native"
      ? strings[nodes[i + nameAt] ?? 0] ?? "?"
      : "";
    if (name.length > 60) name = name.slice(0, 60);
    const key = `${type}${name === "" ? "" : `:${name}`}`;
    const entry = by[key] ??= { count: 0, bytes: 0 };
    entry.count++;
    entry.bytes += size;
    total += size;
  }
  return { total_bytes: total, nodes: nodes.length / width, by_constructor: by };
}

/** Heap snapshot summaries of the main isolate and of each worker isolate (by script name). */
export interface Snapshots {
  main: HeapSummary;
  workers: Record<string, HeapSummary>;
}

/** What a session with every isolate of a daemon can ask (`session` "" is the main one). */
interface Inspector {
  /** Sends a method to an isolate; resolves with its result. */
  call(session: string, method: string, params?: unknown): Promise<Record<string, unknown>>;
  /** The attached workers: session to script name. */
  workers: Map<string, string>;
  /** Listens to chunks of a heap snapshot of `session`. */
  chunks(session: string): string[];
  close(): void;
}

/** Opens an inspector session on 127.0.0.1:`port` of this namespace, workers attached. */
async function inspector(port: number): Promise<Inspector> {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
    webSocketDebuggerUrl: string;
  }[];
  const url = targets[0]?.webSocketDebuggerUrl;
  if (url === undefined) throw new Error("Cannot inspect: no inspector target");
  const socket = new WebSocket(url);
  let nextId = 1;
  const pending = new Map<
    string,
    { resolve(r: Record<string, unknown>): void; reject(e: Error): void }
  >();
  const chunks = new Map<string, string[]>();
  const workers = new Map<string, string>();
  const handle = (message: Record<string, unknown>, session: string) => {
    const params = message.params as Record<string, unknown> | undefined;
    if (message.method === "HeapProfiler.addHeapSnapshotChunk") {
      chunks.get(session)?.push(String(params?.chunk));
    } else if (message.method === "NodeWorker.attachedToWorker") {
      const info = params?.workerInfo as { url: string };
      workers.set(String(params?.sessionId), info.url.split("/").pop() ?? info.url);
    } else if (message.method === "NodeWorker.receivedMessageFromWorker") {
      handle(JSON.parse(String(params?.message)), String(params?.sessionId));
    } else if (typeof message.id === "number") {
      const waiter = pending.get(`${session}:${message.id}`);
      pending.delete(`${session}:${message.id}`);
      if (message.error) waiter?.reject(new Error(JSON.stringify(message.error)));
      else waiter?.resolve((message.result ?? {}) as Record<string, unknown>);
    }
  };
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error("Cannot reach the inspector"));
  });
  socket.onmessage = (event) => handle(JSON.parse(String(event.data)), "");
  const call = (session: string, method: string, params: unknown = {}) => {
    const id = nextId++;
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      pending.set(`${session}:${id}`, { resolve, reject });
      const message: Record<string, unknown> = { id, method, params };
      if (session !== "") message.sessionId = session;
      socket.send(JSON.stringify(message));
    });
  };
  await call("", "NodeWorker.enable", { waitForDebuggerOnStart: false });
  await new Promise((r) => setTimeout(r, 300)); // The attached workers announce themselves.
  return {
    call,
    workers,
    chunks: (session) => {
      const list: string[] = [];
      chunks.set(session, list);
      return list;
    },
    close: () => socket.close(),
  };
}

/**
 * Takes heap snapshots of the isolates whose inspector listens on 127.0.0.1:`port` of this
 * namespace: the main one and every worker's (reached through the NodeWorker domain). With
 * `file`, each whole snapshot is also written to `file.ISOLATE`.
 */
export async function takeSnapshots(port: number, file?: string): Promise<Snapshots> {
  const session = await inspector(port);
  const snapshot = async (id: string, name: string): Promise<HeapSummary> => {
    const chunks = session.chunks(id);
    await session.call(id, "HeapProfiler.collectGarbage");
    await session.call(id, "HeapProfiler.takeHeapSnapshot");
    const text = chunks.join("");
    if (file !== undefined) await Deno.writeTextFile(`${file}.${name}`, text);
    return summarizeSnapshot(text);
  };
  try {
    const result: Snapshots = { main: await snapshot("", "main"), workers: {} };
    for (const [id, name] of session.workers) result.workers[name] = await snapshot(id, name);
    return result;
  } finally {
    session.close();
  }
}

/** V8 heap used and committed of one isolate, in bytes (Runtime.getHeapUsage). */
export interface HeapUsage {
  used: number;
  total: number;
}

/** Each isolate's heap usage, optionally after a full garbage collection in each. */
export async function heapUsage(port: number, gc: boolean): Promise<Record<string, HeapUsage>> {
  const session = await inspector(port);
  try {
    const result: Record<string, HeapUsage> = {};
    for (const [id, name] of [["", "main"], ...session.workers] as [string, string][]) {
      if (gc) await session.call(id, "HeapProfiler.collectGarbage");
      const usage = await session.call(id, "Runtime.getHeapUsage");
      result[name] = { used: Number(usage.usedSize), total: Number(usage.totalSize) };
    }
    return result;
  } finally {
    session.close();
  }
}

/** The constructors that grew most between two summaries (by bytes). */
export function growth(
  before: HeapSummary,
  after: HeapSummary,
  top = 12,
): { name: string; count: number; bytes: number }[] {
  const rows = Object.entries(after.by_constructor).map(([name, a]) => {
    const b = before.by_constructor[name] ?? { count: 0, bytes: 0 };
    return { name, count: a.count - b.count, bytes: a.bytes - b.bytes };
  });
  return rows.sort((x, y) => y.bytes - x.bytes).slice(0, top);
}

/** Takes snapshots of daemon A from inside its namespace (this file, run there). */
async function snapshotIn(lab: Lab, file?: string): Promise<Snapshots> {
  const out = await Deno.makeTempFile({ prefix: "punchd-heap-", suffix: ".json" });
  try {
    const result = await lab.tryExec(lab.hostA.ns, [
      Deno.execPath(),
      "run",
      "-A",
      SELF,
      "--take-snapshot",
      String(INSPECTOR_PORT),
      out,
      ...(file === undefined ? [] : [file]),
    ]);
    if (result.code !== 0) throw new Error(`Cannot take heap snapshots: ${result.stderr.trim()}`);
    return JSON.parse(await Deno.readTextFile(out)) as Snapshots;
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

/** One checkpoint of the flood. */
interface Checkpoint {
  attempts: number;
  successes: number;
  /** Right after the last batch, the technique worker still running. */
  busy: ProcessMemory;
  /** Once the worker has stopped for idleness (without --snapshots). */
  idle: ProcessMemory | null;
  /** V8 heap (snapshot) of the main isolate and the technique worker's, with --snapshots. */
  main_heap_bytes: number | null;
  worker_heap_bytes: number | null;
}

/** Options of the memory section. */
export interface MemoryOptions {
  technique?: TechniqueChoice;
  /** Attempts at once in each batch (default 100). */
  batch?: number;
  /** Checkpoints (attempts in all; default 1,000 and 10,000, or 100 and 500 with --quick). */
  checkpoints?: number[];
  /**
   * Take heap snapshots at each checkpoint (daemon A runs with the inspector, its worker is
   * kept, and taking a snapshot costs the daemon tens of MB of RSS: the RSS figures then do
   * not stand for a daemon without it).
   */
  snapshots?: boolean;
  /** Keep the whole snapshots there (`heap-N.heapsnapshot.ISOLATE`). */
  snapshotDir?: string;
}

/** Milliseconds to wait for an idle worker to stop and its isolate's memory to go. */
const SETTLE_MS = 25_000;

/** The memory section. */
export function memorySection(options: MemoryOptions = {}): Section {
  return async (context: BenchContext) => {
    const technique = options.technique ?? "tcp-nutss";
    const batch = options.batch ?? 100;
    const checkpoints = options.checkpoints ?? (context.quick ? [100, 500] : [1000, 10_000]);
    const snapshots = options.snapshots ?? false;
    const daemonArgs = [
      "--log-level",
      "warn",
      "--max-attempts",
      "65536",
      "--attempt-timeout",
      "60",
      "--worker-idle",
      snapshots ? "3600" : "2",
    ];
    await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
    const rendezvous = spawnService(lab, lab.internet.ns, [
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-read",
      new URL("../../src/rendezvous/main.ts", import.meta.url).pathname,
      "--listen",
      `${lab.serverIp}:${RENDEZVOUS_PORT}`,
      ...PROBE_PORTS.flatMap((port) => ["--probe-port", String(port)]),
    ]);
    try {
      await waitForOutput(rendezvous, /rendezvous server listening/);
      const probes = PROBE_PORTS.flatMap((port) => ["--probe", `${lab.serverIp}:${port}`]);
      // With snapshots, daemon A runs with the inspector on its namespace's loopback.
      const inspect = snapshots
        ? [
          "sh",
          "-c",
          `d=$1; shift 2; exec "$d" run --inspect=127.0.0.1:${INSPECTOR_PORT} "$@"`,
          "sh",
        ]
        : [];
      await using daemonA = await startDaemon([...probes, ...daemonArgs], undefined, [
        "ip",
        "netns",
        "exec",
        lab.hostA.ns,
        ...inspect,
      ]);
      await using daemonB = await startDaemon([...probes, ...daemonArgs], undefined, [
        "ip",
        "netns",
        "exec",
        lab.hostB.ns,
      ]);
      const a = await PunchdClient.connect(daemonA.socketPath);
      const b = await PunchdClient.connect(daemonB.socketPath);
      try {
        const pair: Pair = { lab, clientA: a, clientB: b };
        const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
        await wait(3000);
        const idle = processMemory(daemonA.pid);
        const points: Checkpoint[] = [];
        const heaps: Snapshots[] = [];
        let done = 0;
        let ok = 0;
        const failures = new Map<string, number>();
        for (const target of checkpoints) {
          while (done < target) {
            const n = Math.min(batch, target - done);
            const result = await concurrentAttempts(pair, technique, n, done, `m${done}`);
            ok += result.ok;
            for (const [why, count] of result.failures) {
              failures.set(why, (failures.get(why) ?? 0) + count);
            }
            done += n;
            if (done % 1000 === 0 || done === target) {
              context.log(
                `memory: ${done} attempts, ${ok} ok, RSS ${
                  Math.round(processMemory(daemonA.pid).rss_kb / 1024)
                } MB`,
              );
            }
          }
          const busy = processMemory(daemonA.pid);
          let heap: Snapshots | null = null;
          if (snapshots) {
            heap = await snapshotIn(lab, dir(options, String(target)));
            heaps.push(heap);
          } else await wait(SETTLE_MS);
          points.push({
            attempts: target,
            successes: ok,
            busy,
            idle: snapshots ? null : processMemory(daemonA.pid),
            main_heap_bytes: heap?.main.total_bytes ?? null,
            worker_heap_bytes: heap === null ? null : Object.values(heap.workers).reduce(
              (sum, w) => sum + w.total_bytes,
              0,
            ),
          });
          context.log(`memory: checkpoint ${JSON.stringify(points.at(-1))}`);
        }
        if ([...failures.keys()].some((why) => why.startsWith("stalled"))) {
          context.log(
            `memory: stalled attempts; daemon A's log ends:\n${daemonA.logs().slice(-3000)}`,
          );
          context.log(`memory: daemon B's log ends:\n${daemonB.logs().slice(-3000)}`);
        }
        const first = points[0];
        const last = points.at(-1);
        const grew: { isolate: string; name: string; count: number; bytes: number }[] = [];
        const [h0, h1] = [heaps[0], heaps.at(-1)];
        if (h0 !== undefined && h1 !== undefined && h0 !== h1) {
          grew.push(...growth(h0.main, h1.main, 8).map((g) => ({ isolate: "main", ...g })));
          for (const [name, w1] of Object.entries(h1.workers)) {
            const w0 = h0.workers[name];
            if (w0 !== undefined) {
              grew.push(...growth(w0, w1, 8).map((g) => ({ isolate: name, ...g })));
            }
          }
        }
        const mb = (kb: number | undefined) => kb === undefined ? "-" : (kb / 1024).toFixed(1);
        const heapMb = (bytes: number | null) =>
          bytes === null ? "-" : (bytes / 1048576).toFixed(1);
        const table = alignTable([
          [
            "point",
            "ok",
            "RSS MB busy",
            "RSS MB idle",
            "anon MB idle",
            "threads",
            "heap MB main",
            "heap MB worker",
          ],
          ["start", "-", "-", mb(idle.rss_kb), mb(idle.anon_kb), String(idle.threads), "-", "-"],
          ...points.map((p) => [
            `after ${p.attempts}`,
            `${p.successes}/${p.attempts}`,
            mb(p.busy.rss_kb),
            mb(p.idle?.rss_kb),
            mb(p.idle?.anon_kb),
            String((p.idle ?? p.busy).threads),
            heapMb(p.main_heap_bytes),
            heapMb(p.worker_heap_bytes),
          ]),
        ]);
        const delta = (pick: (p: Checkpoint) => number | undefined) => {
          const x = first === undefined ? undefined : pick(first);
          const y = last === undefined ? undefined : pick(last);
          return x === undefined || y === undefined ? null : y - x;
        };
        const idleGrowth = delta((p) => p.idle?.rss_kb);
        const busyGrowth = delta((p) => p.busy.rss_kb);
        return {
          name: "memory",
          json: {
            technique,
            batch,
            snapshots,
            daemon_args: daemonArgs,
            settle_ms: SETTLE_MS,
            start: idle,
            checkpoints: points,
            rss_idle_growth_kb: idleGrowth,
            rss_busy_growth_kb: busyGrowth,
            heap_growth: grew,
            failures: Object.fromEntries(failures),
          },
          table: [
            `Memory: daemon A after ${checkpoints.join(" and ")} ${technique} attempts (${batch} ` +
            `at once); RSS growth first to last checkpoint: busy ${
              mb(busyGrowth ?? undefined)
            } MB, ` +
            `idle ${mb(idleGrowth ?? undefined)} MB`,
            ...table,
            ...(grew.length === 0 ? [] : [
              "Heap growth by constructor (first to last checkpoint):",
              ...alignTable([
                ["isolate", "constructor", "objects", "bytes"],
                ...grew.map((g) => [g.isolate, g.name, String(g.count), String(g.bytes)]),
              ]),
            ]),
          ],
        };
      } finally {
        await a.close();
        await b.close();
      }
    } finally {
      await rendezvous.stop();
    }
  };
}

/** The section `tests/bench/main.ts` runs: 1,000 and 10,000 tcp-nutss attempts (100 and 500 with --quick). */
export const section: Section = memorySection();

function dir(options: MemoryOptions, name: string): string | undefined {
  return options.snapshotDir === undefined
    ? undefined
    : `${options.snapshotDir}/heap-${name}.heapsnapshot`;
}

if (import.meta.main) {
  if (Deno.args[0] === "--heap-usage") {
    const [, port, out, gc] = Deno.args;
    await Deno.writeTextFile(out ?? "", JSON.stringify(await heapUsage(Number(port), gc === "gc")));
  } else if (Deno.args[0] === "--take-snapshot") {
    const [, port, out, file] = Deno.args;
    const summary = await takeSnapshots(Number(port), file);
    await Deno.writeTextFile(out ?? "", JSON.stringify(summary));
  } else {
    const technique = Deno.env.get("MEMORY_TECHNIQUE");
    if (technique !== undefined && !(TECHNIQUES as readonly string[]).includes(technique)) {
      throw new RangeError(`Cannot run the memory section: no technique ${technique}`);
    }
    // MEMORY_SNAPSHOTS=1 takes heap snapshots; MEMORY_SNAPSHOTS=DIR keeps them there too.
    const snapshotDir = Deno.env.get("MEMORY_SNAPSHOTS");
    const checkpoints = Deno.env.get("MEMORY_CHECKPOINTS")?.split(",").map(Number);
    await runAlone(() =>
      memorySection({
        ...(technique === undefined ? {} : { technique: technique as TechniqueChoice }),
        ...(snapshotDir === undefined ? {} : { snapshots: true }),
        ...(snapshotDir === undefined || snapshotDir === "1" ? {} : { snapshotDir }),
        ...(checkpoints === undefined ? {} : { checkpoints }),
      })
    );
  }
}
