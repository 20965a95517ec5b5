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
 * - Bulk throughput A → B, punched and plain, interleaved: `runs` transfers
 *   of `size` bytes each (3 × 64 MiB; 1 × 8 MiB with `--quick`), median.
 *
 * Delay: this kernel has neither `sch_netem` nor `sch_fq` (which would honour
 * a departure time set by a tc BPF program), so no long fat path is built;
 * the lab path's round trip is well under a millisecond. The table gives the
 * window bound instead: at 100 ms, a peer window limit of 8.4 MB (65535 << 7,
 * the scale tcp-syni used to offer) caps a connection at 670 Mbit/s, while
 * the kernel's scale follows from tcp_rmem[2] (10 for 32 MB: 67 MB).
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

/** Port of the plain connection's forward on router B (punched connections use 30000+n). */
const PLAIN_PORT = 31000;

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
      const open = async (kind: "plain" | "tcp-syni"): Promise<Pair> => {
        n++;
        if (kind === "plain") return await plainConnection(lab, PLAIN_PORT + n);
        const { a, b } = await punch(clientA, clientB, lab, "tcp-syni", n);
        return { a, b };
      };
      const info = async (kind: "plain" | "tcp-syni") => {
        const pair = await open(kind);
        try {
          return { a: endInfo(tcpInfo(pair.a)), b: endInfo(tcpInfo(pair.b)) };
        } finally {
          pair.a.close();
          pair.b.close();
        }
      };
      context.log("syni: TCP_INFO of a plain and a tcp-syni connection");
      const plainInfo = await info("plain");
      const syniInfo = await info("tcp-syni");
      const seconds: Record<"plain" | "tcp-syni", number[]> = { plain: [], "tcp-syni": [] };
      for (let run = 0; run < runs; run++) {
        for (const kind of ["tcp-syni", "plain"] as const) {
          const pair = await open(kind);
          try {
            seconds[kind].push(await transfer(pair.a, pair.b, size));
          } finally {
            pair.a.close();
            pair.b.close();
          }
          context.log(`syni: ${kind} run ${run + 1}: ${seconds[kind].at(-1)?.toFixed(3)} s`);
        }
      }
      const rate = (s: number) => size / s / 1e6;
      const mbps = {
        plain: seconds.plain.map(rate),
        "tcp-syni": seconds["tcp-syni"].map(rate),
      };
      const throughputRows = [
        ["A → B bulk", "runs", "MB each", "median MB/s", "all MB/s"],
        ...(["tcp-syni", "plain"] as const).map((kind) => [
          kind,
          String(runs),
          (size / 1e6).toFixed(1),
          median(mbps[kind]).toFixed(0),
          mbps[kind].map((v) => v.toFixed(0)).join(" "),
        ]),
      ];
      result = {
        name: "syni",
        json: {
          tcpInfo: { plain: plainInfo, tcpSyni: syniInfo },
          throughput: {
            bytesPerRun: size,
            runs,
            plainMBps: mbps.plain,
            tcpSyniMBps: mbps["tcp-syni"],
            plainMedianMBps: median(mbps.plain),
            tcpSyniMedianMBps: median(mbps["tcp-syni"]),
          },
          delay: "not emulated: no sch_netem or sch_fq in this kernel; see peerWindowLimit",
        },
        table: [
          "tcp-syni sockets vs a plain kernel connection, same hosts and NATs (lab path, no added delay)",
          ...alignTable(infoRows(plainInfo, syniInfo)),
          ...alignTable(throughputRows),
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
