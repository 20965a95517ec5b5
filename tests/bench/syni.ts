/**
 * Bench section `syni`: is a tcp-syni socket the socket the kernel would
 * have built? On one lab pair (both NATs silent and port-preserving) it
 * opens a plain kernel connection from host A to host B (a port forward on
 * router B, the only change to the lab) and punches a tcp-syni connection
 * between the same hosts, then compares them:
 *
 * - TCP_INFO of each end (`ss -ti` shows the same numbers): window scale
 *   both ways, timestamps, SACK, the MSS sent and advertised, the RTT
 *   estimate right after the connection is handed over, and the largest
 *   window the peer can advertise with its scale (65535 << snd_wscale),
 *   which bounds the throughput on a long path: window / RTT.
 * - Bulk throughput A → B, punched and plain, interleaved, `runs` fresh
 *   connections each (3; 1 with `--quick`), `size` bytes each (64 MiB; 8 MiB
 *   with `--quick`), on the lab path as it is (well under a millisecond)
 *   and on a long fat path: 50 ms more each way (100 ms round trip) through
 *   a delay line (syni_delay_line.ts: this kernel has neither `sch_netem`
 *   nor `sch_fq`, which would honour departure times set by a tc BPF
 *   program), timed after a warm-up transfer of `size` on the same
 *   connection (slow start at 100 ms takes about a second). On the long
 *   path the sender's send buffer limit is raised to 64 MiB, as on a host
 *   tuned for such paths: the default 4 MB would hold both kinds to about
 *   35 MB/s and hide the receive window, which is what differed (65535 << 7,
 *   8.4 MB, the scale tcp-syni used to offer: at most 84 MB/s at 100 ms).
 *
 * ```
 * sudo deno run --allow-all tests/bench/syni.ts --quick
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { inNetns } from "../../ffi/netns.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { type TcpInfo, tcpInfo } from "../../ffi/tcp_info.ts";
import type { Lab } from "../lab/lab.ts";
import { punch, withLab } from "../lab/punch.ts";
import { spawnService, waitForOutput } from "../lab/services.ts";
import {
  alignTable,
  type BenchContext,
  median,
  type Section,
  type SectionResult,
} from "./section.ts";

/** Both ends of one connection between host A (`a`) and host B (`b`). */
export interface Pair {
  a: Socket;
  b: Socket;
}

/** Labs whose router B already lets forwarded connections in (see {@linkcode plainConnection}). */
const forwarding = new WeakSet<Lab>();

/**
 * An ordinary kernel connection from host A to host B across both NATs:
 * router B forwards `port` of its public address to host B (DNAT, and its
 * forward chain lets DNATed flows in), host B listens, host A connects.
 * The sockets live in the hosts' namespaces but belong to this process.
 */
export async function plainConnection(lab: Lab, port: number, signal?: AbortSignal): Promise<Pair> {
  if (!forwarding.has(lab)) {
    await lab.exec(
      lab.routerB.ns,
      ["nft", "-f", "-"],
      "table ip benchfwd {\n  chain prerouting {\n" +
        "    type nat hook prerouting priority dstnat; policy accept;\n  }\n}\n",
    );
    await lab.exec(lab.routerB.ns, [
      "nft",
      "insert",
      "rule",
      "inet",
      "lab",
      "forward",
      "ct",
      "status",
      "dnat",
      "accept",
    ]);
    forwarding.add(lab);
  }
  await lab.exec(lab.routerB.ns, [
    "nft",
    "add",
    "rule",
    "ip",
    "benchfwd",
    "prerouting",
    "iifname",
    "wan0",
    "tcp",
    "dport",
    String(port),
    "dnat",
    "to",
    lab.hostB.ip,
  ]);
  const listener = inNetns(lab.hostB.ns, () => Socket.create("inet", "stream"));
  using _listener = listener;
  listener.bind(inetAddress(lab.hostB.ip, port));
  listener.listen(1);
  const a = inNetns(lab.hostA.ns, () => Socket.create("inet", "stream"));
  try {
    const accepted = listener.accept(signal);
    await a.connect(inetAddress(lab.publicB, port), signal);
    return { a, b: (await accepted).socket };
  } catch (error) {
    a.close();
    throw error;
  }
}

const DELAY_LINE = new URL("./syni_delay_line.ts", import.meta.url).pathname;

/**
 * Runs `fn` while every packet between the two NATs' public networks takes
 * `oneWayMs` longer in each direction: the internet router sends them
 * through a TUN delay line (syni_delay_line.ts) by policy routing (packets
 * from router A's link to B's network, and back, use a table whose only
 * route is the TUN; what comes out of the TUN takes the main table). The
 * rendezvous server's traffic is not delayed. Each delayed packet crosses
 * the internet router twice, so it loses one more TTL hop there.
 */
export async function withDelay<T>(lab: Lab, oneWayMs: number, fn: () => Promise<T>): Promise<T> {
  const ns = lab.internet.ns;
  const line = spawnService(lab, ns, [
    Deno.execPath(),
    "run",
    "--allow-ffi",
    "--allow-read",
    DELAY_LINE,
    "--tun",
    "dly0",
    "--delay-ms",
    String(oneWayMs),
  ]);
  const rules = [
    ["iif", "wana", "to", "172.16.2.0/24", "lookup", "100", "pref", "100"],
    ["iif", "wanb", "to", "172.16.1.0/24", "lookup", "100", "pref", "101"],
  ];
  try {
    await waitForOutput(line, /delay line ready/, 15_000);
    for (const key of ["all", "dly0"]) {
      await lab.exec(ns, ["sysctl", "-qw", `net.ipv4.conf.${key}.rp_filter=0`]);
    }
    await lab.exec(ns, ["ip", "link", "set", "dly0", "up"]);
    await lab.exec(ns, ["ip", "route", "add", "default", "dev", "dly0", "table", "100"]);
    for (const rule of rules) await lab.exec(ns, ["ip", "rule", "add", ...rule]);
    return await fn();
  } finally {
    for (const rule of rules) await lab.tryExec(ns, ["ip", "rule", "del", ...rule]);
    await line.stop();
  }
}

/** The TCP_INFO fields the comparison shows, for one end. */
export interface EndInfo {
  sndWscale: number;
  rcvWscale: number;
  timestamps: boolean;
  sack: boolean;
  sndMss: number;
  advmss: number;
  rcvMss: number;
  /** Smoothed RTT estimate, µs. */
  rttUs: number;
  /** The largest window the peer can advertise with its scale: 65535 << snd_wscale. */
  peerWindowLimit: number;
}

/** The comparison's fields of `info`. */
export function endInfo(info: TcpInfo): EndInfo {
  return {
    sndWscale: info.sndWscale,
    rcvWscale: info.rcvWscale,
    timestamps: info.timestamps,
    sack: info.sack,
    sndMss: info.sndMss,
    advmss: info.advmss,
    rcvMss: info.rcvMss,
    rttUs: info.rtt,
    peerWindowLimit: 65535 * 2 ** info.sndWscale,
  };
}

/**
 * Sends `size` bytes from `from` to `to` in 1 MiB writes; resolves with
 * the seconds from the first write to the last byte read.
 */
export async function transfer(from: Socket, to: Socket, size: number): Promise<number> {
  const chunk = new Uint8Array(1 << 20);
  const start = performance.now();
  const send = async () => {
    for (let sent = 0; sent < size; sent += chunk.byteLength) {
      await from.write(sent + chunk.byteLength <= size ? chunk : chunk.slice(0, size - sent));
    }
  };
  const receive = async () => {
    const buf = new Uint8Array(1 << 20);
    for (let got = 0; got < size;) {
      const n = await to.read(buf, AbortSignal.timeout(30_000));
      if (n <= 0) throw new Error(`Cannot finish the transfer: end of stream after ${got} bytes`);
      got += n;
    }
  };
  await Promise.all([send(), receive()]);
  return (performance.now() - start) / 1000;
}

/** One row of the TCP_INFO table: a field of both connections' ends. */
function infoRows(plain: { a: EndInfo; b: EndInfo }, syni: { a: EndInfo; b: EndInfo }): string[][] {
  const fields: [string, (e: EndInfo) => string][] = [
    ["snd_wscale", (e) => String(e.sndWscale)],
    ["rcv_wscale", (e) => String(e.rcvWscale)],
    ["timestamps", (e) => (e.timestamps ? "yes" : "no")],
    ["sack", (e) => (e.sack ? "yes" : "no")],
    ["snd_mss", (e) => String(e.sndMss)],
    ["advmss", (e) => String(e.advmss)],
    ["rcv_mss", (e) => String(e.rcvMss)],
    ["rtt after connect (ms)", (e) => (e.rttUs / 1000).toFixed(3)],
    ["peer window limit (MB)", (e) => (e.peerWindowLimit / 1e6).toFixed(1)],
  ];
  return [
    ["TCP_INFO", "plain A", "tcp-syni A", "plain B", "tcp-syni B"],
    ...fields.map(([name, f]) => [name, f(plain.a), f(syni.a), f(plain.b), f(syni.b)]),
  ];
}

/** Port of the plain connections' forwards on router B (punched connections use 30000+n). */
const PLAIN_PORT = 31000;
/** The long path's added delay each way, ms (a 100 ms round trip). */
export const LONG_PATH_ONE_WAY_MS = 50;
/**
 * Host A's (the sender's) largest send buffer for the long path, bytes. The
 * kernel default (tcp_wmem[2], 4 MB) holds about 35 MB/s at 100 ms, below
 * what either window allows; a host tuned for long paths raises it.
 */
export const LONG_PATH_WMEM = 64 << 20;

type Kind = "plain" | "tcp-syni";

/** Median throughput and every run's, MB/s, per kind. */
interface PathResult {
  tcpInfo: Record<Kind, { a: EndInfo; b: EndInfo }>;
  warmUpBytes: number;
  bytesPerRun: number;
  runs: number;
  mbps: Record<Kind, number[]>;
  medianMbps: Record<Kind, number>;
}

/**
 * On the path as it is now: TCP_INFO of a fresh plain and tcp-syni
 * connection, then `runs` interleaved transfers A → B of `size` bytes on a
 * fresh connection each, timed after `warmUp` bytes on the same connection
 * (slow start).
 */
async function measurePath(
  open: (kind: Kind) => Promise<Pair>,
  runs: number,
  warmUp: number,
  size: number,
  log: (line: string) => void,
): Promise<PathResult> {
  const tcpInfos = {} as Record<Kind, { a: EndInfo; b: EndInfo }>;
  for (const kind of ["plain", "tcp-syni"] as const) {
    const pair = await open(kind);
    try {
      tcpInfos[kind] = { a: endInfo(tcpInfo(pair.a)), b: endInfo(tcpInfo(pair.b)) };
    } finally {
      pair.a.close();
      pair.b.close();
    }
  }
  const mbps: Record<Kind, number[]> = { plain: [], "tcp-syni": [] };
  for (let run = 0; run < runs; run++) {
    for (const kind of ["tcp-syni", "plain"] as const) {
      const pair = await open(kind);
      try {
        if (warmUp > 0) await transfer(pair.a, pair.b, warmUp);
        mbps[kind].push(size / await transfer(pair.a, pair.b, size) / 1e6);
      } finally {
        pair.a.close();
        pair.b.close();
      }
      log(`syni: ${kind} run ${run + 1}: ${mbps[kind].at(-1)?.toFixed(1)} MB/s`);
    }
  }
  return {
    tcpInfo: tcpInfos,
    warmUpBytes: warmUp,
    bytesPerRun: size,
    runs,
    mbps,
    medianMbps: { plain: median(mbps.plain), "tcp-syni": median(mbps["tcp-syni"]) },
  };
}

function throughputRows(path: string, r: PathResult): string[][] {
  return (["tcp-syni", "plain"] as const).map((kind) => [
    path,
    kind,
    String(r.runs),
    (r.warmUpBytes / 1e6).toFixed(0),
    (r.bytesPerRun / 1e6).toFixed(0),
    r.medianMbps[kind].toFixed(0),
    r.mbps[kind].map((v) => v.toFixed(0)).join(" "),
  ]);
}

/** The section (see the module doc). */
export const section: Section = async (context: BenchContext): Promise<SectionResult> => {
  const runs = context.quick ? 1 : 3;
  const size = (context.quick ? 8 : 64) * (1 << 20);
  let result: SectionResult | undefined;
  await withLab(
    "preserving",
    "preserving",
    ["--log-level", "info"],
    async (lab, clientA, clientB) => {
      let n = 0;
      const open = async (kind: Kind): Promise<Pair> => {
        n++;
        if (kind === "plain") return await plainConnection(lab, PLAIN_PORT + n);
        const { a, b } = await punch(clientA, clientB, lab, "tcp-syni", n);
        return { a, b };
      };
      context.log("syni: the lab path");
      const lan = await measurePath(open, runs, 0, size, context.log);
      await lab.exec(lab.hostA.ns, [
        "sysctl",
        "-qw",
        `net.ipv4.tcp_wmem=4096 16384 ${LONG_PATH_WMEM}`,
      ]);
      context.log(`syni: the long path (+${LONG_PATH_ONE_WAY_MS} ms each way)`);
      const long = await withDelay(
        lab,
        LONG_PATH_ONE_WAY_MS,
        () => measurePath(open, runs, size, size, context.log),
      );
      result = {
        name: "syni",
        json: {
          labPath: lan,
          longPath: { oneWayDelayMs: LONG_PATH_ONE_WAY_MS, senderWmemMax: LONG_PATH_WMEM, ...long },
        },
        table: [
          "tcp-syni vs a plain kernel connection, same hosts and NATs: TCP_INFO after connect",
          ...alignTable([
            ["path", "TCP_INFO", "plain A", "tcp-syni A", "plain B", "tcp-syni B"],
            ...infoRows(lan.tcpInfo.plain, lan.tcpInfo["tcp-syni"]).slice(1).map((r) => [
              "lab",
              ...r,
            ]),
            ...infoRows(long.tcpInfo.plain, long.tcpInfo["tcp-syni"]).slice(1)
              .filter(([field]) => field?.startsWith("rtt"))
              .map((r) => [`+${2 * LONG_PATH_ONE_WAY_MS} ms`, ...r]),
          ]),
          `bulk A → B, MB/s (long path: +${LONG_PATH_ONE_WAY_MS} ms each way through a TUN delay line, ` +
          `sender tcp_wmem[2] ${
            LONG_PATH_WMEM >> 20
          } MiB; timed after the warm-up on the same connection)`,
          ...alignTable([
            ["path", "kind", "runs", "warm-up MB", "MB timed", "median", "all"],
            ...throughputRows("lab", lan),
            ...throughputRows(`+${2 * LONG_PATH_ONE_WAY_MS} ms`, long),
          ]),
        ],
      };
    },
  );
  if (result === undefined) throw new Error("Cannot run the syni section: no result");
  return result;
};

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trials: { type: "string", default: "3" },
      quick: { type: "boolean", default: false },
      json: { type: "string" },
    },
  });
  if (!/^[1-9][0-9]*$/.test(values.trials)) {
    throw new RangeError(`--trials: ${values.trials} is not a positive integer`);
  }
  const encoder = new TextEncoder();
  const result = await section({
    trials: Number(values.trials),
    quick: values.quick,
    log: (line) => Deno.stderr.writeSync(encoder.encode(`${line}\n`)),
  });
  Deno.stdout.writeSync(encoder.encode(result.table.join("\n") + "\n"));
  if (values.json !== undefined) {
    await Deno.writeTextFile(values.json, JSON.stringify(result.json, null, 2) + "\n");
  }
}
