/**
 * The nftables table punchd owns, `inet punchd`, and nothing else.
 *
 * The daemon creates the table at start-up (deleting what a crashed daemon
 * left) and deletes it on shutdown. Attempts add rules as narrow as their
 * flow and delete them by handle when they end; technique workers report
 * every handle to the daemon, which deletes the rules of a crashed worker.
 *
 * Rules are added by running `nft` (the daemon needs `--allow-run`).
 *
 * @module
 */

import { formatIp, parseIp } from "../../ffi/ip.ts";
import { type CommandResult, runCommand } from "../process.ts";

/** The table's family and name. */
export const TABLE = "inet punchd";

/** The table with its chains, as created at start-up. */
export const TABLE_RULESET = `table ${TABLE} {
  chain input {
    type filter hook input priority filter - 10; policy accept;
  }
  chain output {
    type filter hook output priority filter - 10; policy accept;
  }
}
`;

/** The chains of the table. */
export type Chain = "input" | "output";

/** Result of one nft run. */
export type NftResult = CommandResult;

/** Runs nft; the runner is injectable for tests of callers. */
export type NftRunner = (args: string[], input?: string) => Promise<NftResult>;

/** Runs the `nft` binary. */
export const runNft: NftRunner = (args: string[], input?: string): Promise<NftResult> =>
  runCommand("nft", args, input);

async function must(nft: NftRunner, what: string, args: string[], input?: string): Promise<string> {
  let result: NftResult;
  try {
    result = await nft(args, input);
  } catch (error) {
    throw new Error(`Cannot ${what}: cannot run nft (${(error as Error).message})`, {
      cause: error,
    });
  }
  if (result.code !== 0) {
    throw new Error(
      `Cannot ${what}: ${result.stderr.trim().split("\n")[0] ?? `nft exit ${result.code}`}`,
    );
  }
  return result.stdout;
}

/** Creates the table fresh (removing whatever a crashed daemon left in it). */
export async function createTable(nft: NftRunner = runNft): Promise<void> {
  await nft(["delete", "table", ...TABLE.split(" ")]);
  await must(nft, "create the punchd nftables table", ["-f", "-"], TABLE_RULESET);
}

/** Deletes the table and every rule in it; false when it did not exist. */
export async function deleteTable(nft: NftRunner = runNft): Promise<boolean> {
  const result = await nft(["delete", "table", ...TABLE.split(" ")]);
  return result.code === 0;
}

/** Adds one rule to a chain of the table; returns its handle. */
export async function addRule(
  chain: Chain,
  rule: string,
  comment: string,
  nft: NftRunner = runNft,
): Promise<number> {
  if (!/^[\x20-\x7e]*$/.test(comment) || comment.includes('"')) {
    throw new TypeError("Cannot add rule: bad comment");
  }
  const args = [
    "--echo",
    "--handle",
    "add",
    "rule",
    ...TABLE.split(" "),
    chain,
    ...rule.split(" "),
    "comment",
    `"${comment}"`,
  ];
  const out = await must(nft, "add a firewall rule", args);
  const match = out.match(/# handle (\d+)/);
  if (match === null) throw new Error(`Cannot add a firewall rule: nft printed no handle`);
  return Number(match[1]);
}

/** Deletes a rule by handle; false when it was already gone. */
export async function deleteRule(
  chain: Chain,
  handle: number,
  nft: NftRunner = runNft,
): Promise<boolean> {
  const result = await nft([
    "delete",
    "rule",
    ...TABLE.split(" "),
    chain,
    "handle",
    String(handle),
  ]);
  return result.code === 0;
}

/** Every rule now in the table, one line each (for tests and diagnostics). */
export async function listRules(nft: NftRunner = runNft): Promise<string[]> {
  const result = await nft(["-a", "list", "table", ...TABLE.split(" ")]);
  if (result.code !== 0) return [];
  return result.stdout.split("\n").map((l) => l.trim()).filter((l) =>
    / # handle \d+$/.test(l) && !/^(table|chain) /.test(l)
  );
}

/** A TCP flow as seen by the local host before NAT. */
export interface Flow {
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
}

function hex(ip: string): string {
  return "0x" + Array.from(parseIp(ip), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The rule body that drops ICMP/ICMPv6 time-exceeded errors quoting exactly
 * this TCP flow (the errors a low-TTL SYN provokes). Raw payload offsets are
 * from the start of the ICMP header: the quoted IP header starts 8 bytes in
 * (IPv4 without options: a SYN carries none; IPv6: 40 bytes fixed).
 */
export function timeExceededDropRule(flow: Flow): string {
  const v6 = parseIp(flow.localIp).length === 16;
  if (v6 !== (parseIp(flow.remoteIp).length === 16)) {
    throw new TypeError("Cannot build rule: mixed address families");
  }
  const ports = `@th,${v6 ? 384 : 224},16 ${flow.localPort} @th,${
    v6 ? 400 : 240
  },16 ${flow.remotePort}`;
  if (v6) {
    return `meta l4proto ipv6-icmp icmpv6 type time-exceeded @th,112,8 6 @th,128,128 ${
      hex(flow.localIp)
    } @th,256,128 ${hex(flow.remoteIp)} ${ports} counter drop`;
  }
  return `meta l4proto icmp icmp type time-exceeded @th,136,8 6 @th,160,32 ${
    hex(flow.localIp)
  } @th,192,32 ${hex(flow.remoteIp)} ${ports} counter drop`;
}

/**
 * The rule body that drops pure SYNs (SYN without ACK) of exactly this flow,
 * arriving from `remote` at `local`: the host's stack must not answer them
 * (a RST would end the handshake punchd is completing by hand).
 */
export function pureSynDropRule(flow: Flow): string {
  const v6 = parseIp(flow.localIp).length === 16;
  if (v6 !== (parseIp(flow.remoteIp).length === 16)) {
    throw new TypeError("Cannot build rule: mixed address families");
  }
  const ip = v6 ? "ip6" : "ip";
  return `${ip} saddr ${parseIpText(flow.remoteIp)} ${ip} daddr ${
    parseIpText(flow.localIp)
  } tcp sport ${flow.remotePort} ` +
    `tcp dport ${flow.localPort} tcp flags & (syn|ack) == syn counter drop`;
}

function parseIpText(text: string): string {
  return formatIp(parseIp(text));
}
