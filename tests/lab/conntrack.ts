/**
 * Reads and tunes the conntrack state of a lab router: its timeout sysctls
 * (per network namespace) and its entries, read from /proc/net/nf_conntrack
 * (no `conntrack` tool needed).
 *
 * @module
 */

import type { Lab } from "./lab.ts";

/** The conntrack timeouts that decide how long an idle NAT mapping lives. */
export const TIMEOUT_SYSCTLS = [
  "net.netfilter.nf_conntrack_udp_timeout",
  "net.netfilter.nf_conntrack_udp_timeout_stream",
  "net.netfilter.nf_conntrack_tcp_timeout_established",
  "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
  "net.netfilter.nf_conntrack_tcp_timeout_syn_recv",
  "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
  "net.netfilter.nf_conntrack_tcp_loose",
  "net.netfilter.nf_conntrack_generic_timeout",
] as const;

/** One conntrack entry as /proc/net/nf_conntrack shows it. */
export interface ConntrackEntry {
  /** "udp" or "tcp". */
  protocol: string;
  /** Seconds left before the entry expires. */
  timeoutSecs: number;
  /** The TCP state (e.g. "ESTABLISHED"); "" for UDP. */
  state: string;
  /** Conntrack saw traffic both ways long enough to call it a stream. */
  assured: boolean;
  /** The whole line. */
  line: string;
}

/** Reads `keys` in namespace `ns`: a map from each key to its value. */
export async function readSysctls(
  lab: Lab,
  ns: string,
  keys: readonly string[] = TIMEOUT_SYSCTLS,
): Promise<Map<string, string>> {
  const out = await lab.exec(ns, ["sysctl", ...keys]);
  const values = new Map<string, string>();
  for (const line of out.split("\n")) {
    const match = line.match(/^(\S+) = (.*)$/);
    if (match !== null) values.set(match[1] ?? "", match[2] ?? "");
  }
  return values;
}

/** Sets sysctls in namespace `ns` (conntrack timeouts are per namespace). */
export async function writeSysctls(
  lab: Lab,
  ns: string,
  values: Record<string, number>,
): Promise<void> {
  for (const [key, value] of Object.entries(values)) {
    await lab.exec(ns, ["sysctl", "-qw", `${key}=${value}`]);
  }
}

/** True when the kernel shows conntrack entries in /proc (CONFIG_NF_CONNTRACK_PROCFS). */
export async function canReadConntrack(lab: Lab, ns: string): Promise<boolean> {
  return (await lab.tryExec(ns, ["test", "-r", "/proc/net/nf_conntrack"])).code === 0;
}

/**
 * The entries of `protocol` in namespace `ns` with `port` as a source or
 * destination port, and `peerPort` as the other one when given.
 */
export async function conntrackEntries(
  lab: Lab,
  ns: string,
  protocol: "udp" | "tcp",
  port: number,
  peerPort?: number,
): Promise<ConntrackEntry[]> {
  const text = await lab.exec(ns, ["cat", "/proc/net/nf_conntrack"]);
  const entries: ConntrackEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    // ipv4 2 udp 17 27 src=... | ipv4 2 tcp 6 431999 ESTABLISHED src=...
    if (fields[2] !== protocol) continue;
    const has = (p: number) => fields.some((f) => f === `sport=${p}` || f === `dport=${p}`);
    if (!has(port) || (peerPort !== undefined && !has(peerPort))) continue;
    const state = fields[5] !== undefined && !fields[5].includes("=") ? fields[5] : "";
    entries.push({
      protocol,
      timeoutSecs: Number.parseInt(fields[4] ?? "", 10),
      state,
      assured: fields.includes("[ASSURED]"),
      line: line.trim(),
    });
  }
  return entries;
}
