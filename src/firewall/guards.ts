/**
 * Guards: the packet filters an attempt may ask for, as elements of the
 * fixed sets of punchd's nftables table (see {@linkcode TABLE_RULESET}).
 *
 * No rule is added or deleted while punchd runs: the table's rules are
 * written once at start-up, and each guard is one set element whose key is
 * the flow it protects, with a timeout. A guard therefore costs one line in
 * an `nft -f -` batch, and it expires by itself if the daemon dies.
 *
 * Keys are raw header fields, the same for every kind: source address .
 * destination address . both ports as one 32-bit word (source port in the
 * high half), as they appear in the packet the guard matches. (nft 1.0.6
 * cannot add elements to concatenations of more than four raw fields, and
 * 32-bit raw fields avoid its integer-in-concatenation bugs.)
 *
 * ```
 * kind            chain   drops
 * time-exceeded   input   ICMP(v6) time-exceeded quoting local:lp -> remote:rp (TCP)
 * pure-syn        input   SYN without ACK from remote:rp to local:lp
 * rst-out         output  any RST from local:lp to remote:rp
 * syn-ack         input   SYN-ACK from remote:rp to local:lp whose ack is not `ack`
 * ```
 *
 * @module
 */

import { parseIp } from "../../ffi/ip.ts";

/** Table family and name. */
export const TABLE = "inet punchd";

/** A TCP flow as seen by this host before NAT. */
export interface Flow {
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
}

/** What an attempt asks the firewall to drop for one flow. */
export type Guard =
  | { kind: "time-exceeded"; flow: Flow }
  | { kind: "pure-syn"; flow: Flow }
  | { kind: "rst-out"; flow: Flow }
  | {
    kind: "syn-ack";
    flow: Flow;
    /** The only acknowledgement number a SYN-ACK of the flow may carry (our ISN + 1). */
    ack: number;
  };

/** A guard as one line of text: equal guards, equal keys (to match a request with a plan). */
export function guardKey(guard: Guard): string {
  const { flow } = guard;
  const ack = guard.kind === "syn-ack" ? ` ${guard.ack}` : "";
  return `${guard.kind} ${flow.localIp} ${flow.localPort} ${flow.remoteIp} ${flow.remotePort}${ack}`;
}

/** The kinds of guard. */
export const GUARD_KINDS = ["time-exceeded", "pure-syn", "rst-out", "syn-ack"] as const;

// Raw field expressions, per family: [source, destination, ports] of the packet itself.
const NH4 = "@nh,96,32 . @nh,128,32 . @th,0,32";
const NH6 = "@nh,64,128 . @nh,192,128 . @th,0,32";
// The TCP/IP header quoted in an ICMP error, counted from the ICMP header.
const TE4 = "@th,160,32 . @th,192,32 . @th,224,32";
const TE6 = "@th,128,128 . @th,256,128 . @th,384,32";

/** The table, its sets and its rules, as created at start-up. */
export const TABLE_RULESET = `table ${TABLE} {
  set te4 { typeof ${TE4}; flags timeout; }
  set te6 { typeof ${TE6}; flags timeout; }
  set syn4 { typeof ${NH4}; flags timeout; }
  set syn6 { typeof ${NH6}; flags timeout; }
  set rst4 { typeof ${NH4}; flags timeout; }
  set rst6 { typeof ${NH6}; flags timeout; }
  set sag4 { typeof ${NH4}; flags timeout; }
  set sag6 { typeof ${NH6}; flags timeout; }
  set saa4 { typeof ${NH4} . @th,64,32; flags timeout; }
  set saa6 { typeof ${NH6} . @th,64,32; flags timeout; }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    meta nfproto ipv4 icmp type time-exceeded @th,136,8 6 ${TE4} @te4 counter drop
    meta nfproto ipv6 icmpv6 type time-exceeded @th,112,8 6 ${TE6} @te6 counter drop
    meta nfproto ipv4 meta l4proto tcp tcp flags & (syn|ack) == syn ${NH4} @syn4 counter drop
    meta nfproto ipv6 meta l4proto tcp tcp flags & (syn|ack) == syn ${NH6} @syn6 counter drop
    meta nfproto ipv4 meta l4proto tcp tcp flags & (syn|ack) == syn|ack ${NH4} @sag4 ${NH4} . @th,64,32 != @saa4 counter drop
    meta nfproto ipv6 meta l4proto tcp tcp flags & (syn|ack) == syn|ack ${NH6} @sag6 ${NH6} . @th,64,32 != @saa6 counter drop
  }
  chain output {
    type filter hook output priority filter - 10; policy accept;
    meta nfproto ipv4 meta l4proto tcp tcp flags & rst == rst ${NH4} @rst4 counter drop
    meta nfproto ipv6 meta l4proto tcp tcp flags & rst == rst ${NH6} @rst6 counter drop
  }
}
`;

/** Every set of the table. */
export const SETS = [
  "te4",
  "te6",
  "syn4",
  "syn6",
  "rst4",
  "rst6",
  "sag4",
  "sag6",
  "saa4",
  "saa6",
] as const;

/** One element of one set. */
export interface Element {
  set: (typeof SETS)[number];
  /** The key in nft's syntax, e.g. `0x0a000102 . 0xac100202 . 0x9c40c350`. */
  key: string;
}

function hex(bytes: Uint8Array): string {
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function word(value: number): string {
  return "0x" + (value >>> 0).toString(16).padStart(8, "0");
}

function port(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new RangeError(`Cannot build guard: ${what} ${value} is not a port (1-65535)`);
  }
  return value;
}

/** The key of a packet from `src`:`sp` to `dst`:`dp`, and its family suffix. */
function key(src: string, sp: number, dst: string, dp: number): { key: string; v: "4" | "6" } {
  const s = parseIp(src);
  const d = parseIp(dst);
  if (s.length !== d.length) throw new TypeError("Cannot build guard: mixed address families");
  const ports = (port(sp, "source port") * 0x10000 + port(dp, "destination port")) >>> 0;
  return { key: `${hex(s)} . ${hex(d)} . ${word(ports)}`, v: s.length === 4 ? "4" : "6" };
}

/** The set elements that implement `guard`; throws TypeError/RangeError on a bad flow. */
export function guardElements(guard: Guard): Element[] {
  const { localIp, localPort, remoteIp, remotePort } = guard.flow;
  const outbound = key(localIp, localPort, remoteIp, remotePort);
  const inbound = key(remoteIp, remotePort, localIp, localPort);
  switch (guard.kind) {
    case "time-exceeded":
      return [{ set: `te${outbound.v}`, key: outbound.key }];
    case "pure-syn":
      return [{ set: `syn${inbound.v}`, key: inbound.key }];
    case "rst-out":
      return [{ set: `rst${outbound.v}`, key: outbound.key }];
    case "syn-ack": {
      if (!Number.isInteger(guard.ack) || guard.ack < 0 || guard.ack > 0xffffffff) {
        throw new RangeError("Cannot build guard: ack must be a 32-bit unsigned integer");
      }
      return [
        { set: `saa${inbound.v}`, key: `${inbound.key} . ${word(guard.ack)}` },
        { set: `sag${inbound.v}`, key: inbound.key },
      ];
    }
  }
}

/** Checks the shape of a guard that crossed a thread boundary; throws TypeError. */
export function assertGuard(value: unknown): asserts value is Guard {
  const g = value as Partial<Guard> | null;
  if (
    typeof g !== "object" || g === null || !GUARD_KINDS.includes(g.kind as Guard["kind"]) ||
    typeof g.flow !== "object" || g.flow === null
  ) {
    throw new TypeError("Cannot use guard: bad shape");
  }
  guardElements(g as Guard);
}
