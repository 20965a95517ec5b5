/**
 * A lab with one NAT pair for the bench sections: the namespaces and NATs
 * (tests/lab/lab.ts), the rendezvous/probe server and one punchd per host
 * (tests/lab/services.ts), a client connected to each daemon, and a
 * measurement of the round-trip time between the two hosts' networks.
 * Everything is torn down when the callback returns or throws.
 *
 * ```ts
 * const medianMs = await withLabPair({ a: "preserving", b: "symmetric" }, async (pair) => {
 *   const { rttMs } = await pair.rtt();
 *   const outcome = await punch(pair.clientA, pair.clientB, pair.lab, "tcp-nutss", 0);
 *   ...
 * });
 * ```
 *
 * The daemons log at `info` (as users run them; tests/helpers/daemon.ts starts them at
 * `debug`), unless `daemonArgs` says otherwise: later flags win.
 *
 * RTT: the lab has no `ping`, and a silent NAT's router drops echo requests to its public
 * address, so {@linkcode LabPair.rtt} times TCP handshakes instead (Debian's python3, a test
 * dependency already): a listener on the internet router (where the rendezvous server runs),
 * and a client on host A, then on host B, each connecting through its own NAT, one connection
 * at a time. Each sample is the kernel's own measurement of the SYN to SYN-ACK round trip
 * (tcp_info's `tcpi_rtt` right after the handshake), so no process's wake-up is in it. The
 * A-B round trip is the sum of the two legs' medians: the path A → router A → internet →
 * router B → B crosses the same links as the two legs together; the sum counts one extra
 * turnaround in the internet router's stack (a few microseconds), so it errs on the long side.
 * The first connections of each leg are a warm-up and are not counted (neighbour resolution).
 *
 * @module
 */

import { PunchdClient } from "../../src/client/client.ts";
import { PYTHON } from "../helpers/member.ts";
import type { RunningDaemon } from "../helpers/daemon.ts";
import type { Lab, LabOptions, NatProfile } from "../lab/lab.ts";
import { withLab } from "../lab/punch.ts";
import { type LabServices, spawnService, waitForOutput } from "../lab/services.ts";
import { median } from "./section.ts";

/** What {@linkcode withLabPair} builds. */
export interface LabPairOptions {
  /** Host A's NAT. */
  a: NatProfile;
  /** Host B's NAT. */
  b: NatProfile;
  /** More punchd flags for both daemons (after `--log-level info`, so they win). */
  daemonArgs?: string[];
  /** More lab options (IPv6, a third host, WAN netem). */
  lab?: Omit<LabOptions, "natA" | "natB">;
}

/** One RTT measurement (milliseconds). */
export interface RttMeasurement {
  /** Host A to host B's network: `legA + legB` (see the module doc). */
  rttMs: number;
  /** Median round trip host A ↔ internet router, through NAT A. */
  legAMs: number;
  /** Median round trip host B ↔ internet router, through NAT B. */
  legBMs: number;
  /** Probes counted per leg (after the warm-up). */
  probes: number;
  /** Probes of either leg whose connect failed (no SYN-ACK within 2 s). */
  lost: number;
}

/** A built lab pair, valid inside the {@linkcode withLabPair} callback. */
export interface LabPair {
  lab: Lab;
  /** The rendezvous server and both daemons (`services.a.pid`, `.socketPath`, `.logs()`...). */
  services: LabServices;
  /** punchd on host A and on host B (the same objects as `services.a` and `services.b`). */
  daemonA: RunningDaemon;
  daemonB: RunningDaemon;
  /** A client connected to each daemon (closed when the callback ends). */
  clientA: PunchdClient;
  clientB: PunchdClient;
  /** Host A's and host B's network namespaces. */
  nsA: string;
  nsB: string;
  /** The NAT profiles the pair was built with. */
  natA: NatProfile;
  natB: NatProfile;
  /** Measures the A-B round trip now, with `probes` handshakes per leg (default 20). */
  rtt(probes?: number): Promise<RttMeasurement>;
}

/** The TCP port of the RTT listener on the internet router (the rendezvous server has 7000-7002). */
export const RTT_PORT = 7990;

/** Listener: accepts and closes every connection; exits after `idle` seconds without one. */
const HANDSHAKE_SERVER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
s.settimeout(float(sys.argv[3]))
print("listener ready", flush=True)
try:
    while True:
        conn, peer = s.accept()
        conn.close()
except socket.timeout:
    pass
`;

/**
 * Client: `count` connections one at a time, 10 ms apart; prints each handshake's RTT in ms as
 * the kernel measured it (tcp_info's tcpi_rtt, in microseconds at offset 68: after the
 * handshake it is the SYN to SYN-ACK sample alone), or "lost" when a connect fails.
 */
const HANDSHAKE_CLIENT = `
import socket, struct, sys, time
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect((ip, port))
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        print(struct.unpack_from("I", info, 68)[0] / 1000, flush=True)
    except OSError:
        print("lost", flush=True)
    s.close()
    time.sleep(0.01)
`;

/** Probes per leg that are not counted (neighbour resolution, first NAT crossing). */
const WARM_UP = 2;

/** Runs the handshake client in `ns` against the internet router; returns the counted RTTs and losses. */
async function leg(lab: Lab, ns: string, probes: number): Promise<{ ms: number[]; lost: number }> {
  const output = await lab.exec(ns, [
    PYTHON,
    "-c",
    HANDSHAKE_CLIENT,
    lab.serverIp,
    String(RTT_PORT),
    String(probes + WARM_UP),
  ]);
  const lines = output.trim().split("\n").slice(WARM_UP);
  const ms = lines.filter((l) => l !== "lost").map(Number);
  if (ms.some((v) => !Number.isFinite(v))) {
    throw new SyntaxError(`Cannot parse the RTT client's output: ${output}`);
  }
  return { ms, lost: lines.length - ms.length };
}

/** Measures the A-B round trip of `lab` (see the module doc). */
export async function measureRtt(lab: Lab, probes = 20): Promise<RttMeasurement> {
  if (!Number.isInteger(probes) || probes < 1 || probes > 1000) {
    throw new RangeError(`Cannot measure RTT with ${probes} probes: expected 1-1000`);
  }
  const server = spawnService(lab, lab.internet.ns, [
    PYTHON,
    "-c",
    HANDSHAKE_SERVER,
    lab.serverIp,
    String(RTT_PORT),
    "30",
  ]);
  try {
    await waitForOutput(server, /listener ready/, 10_000);
    const a = await leg(lab, lab.hostA.ns, probes);
    const b = await leg(lab, lab.hostB.ns, probes);
    if (a.ms.length === 0 || b.ms.length === 0) {
      throw new Error(
        `Cannot measure RTT: every probe of a leg was lost (A ${a.lost}, B ${b.lost})`,
      );
    }
    const legAMs = median(a.ms);
    const legBMs = median(b.ms);
    return { rttMs: legAMs + legBMs, legAMs, legBMs, probes, lost: a.lost + b.lost };
  } finally {
    await server.stop();
  }
}

/**
 * Builds a lab for the pair `a`/`b`, starts the rendezvous server and both
 * daemons, connects a client to each, runs `fn`, and tears everything down
 * (clients, daemons, server, namespaces) whether `fn` returns or throws. An
 * error from `fn` carries both daemons' logs (tests/lab/punch.ts withLab).
 */
export async function withLabPair<T>(
  options: LabPairOptions,
  fn: (pair: LabPair) => Promise<T>,
): Promise<T> {
  let result: { value: T } | undefined;
  await withLab(
    options.a,
    options.b,
    ["--log-level", "info", ...(options.daemonArgs ?? [])],
    async (lab, clientA, clientB, services) => {
      result = {
        value: await fn({
          lab,
          services,
          daemonA: services.a,
          daemonB: services.b,
          clientA,
          clientB,
          nsA: lab.hostA.ns,
          nsB: lab.hostB.ns,
          natA: options.a,
          natB: options.b,
          rtt: (probes) => measureRtt(lab, probes),
        }),
      };
    },
    options.lab ?? {},
  );
  if (result === undefined) throw new Error("Cannot happen: withLab returned without running fn");
  return result.value;
}
