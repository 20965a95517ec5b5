/**
 * Which side of the host's own NATs and firewalls a router is on, judged by
 * the address it answers from.
 *
 * A router inside (the home router, a carrier-grade NAT, a firewall on the
 * LAN) usually answers from private (RFC 1918), shared (RFC 6598,
 * 100.64.0.0/10), unique local (fc00::/7) or link-local space; the first
 * router outside answers from a public address. Labs and some operators run
 * their "internet" in private space too, so a router is also outside when it
 * is in the same special-purpose block as the destination, unless the host's
 * own source address is in that block as well (then the address tells
 * nothing: see {@linkcode ambiguousRoute}).
 *
 * @module
 */

import { parseIp } from "../../ffi/ip.ts";

/** A special-purpose address block (not globally routed). */
export interface AddressBlock {
  /** CIDR text, e.g. "10.0.0.0/8". */
  cidr: string;
  /** What it is, for logs. */
  kind: "private" | "shared" | "link-local" | "loopback" | "unique-local";
}

interface Prefix extends AddressBlock {
  bytes: Uint8Array;
  length: number;
}

const BLOCKS: readonly Prefix[] = (
  [
    ["10.0.0.0/8", "private"],
    ["172.16.0.0/12", "private"],
    ["192.168.0.0/16", "private"],
    ["100.64.0.0/10", "shared"],
    ["169.254.0.0/16", "link-local"],
    ["127.0.0.0/8", "loopback"],
    ["fc00::/7", "unique-local"],
    ["fe80::/10", "link-local"],
    ["::1/128", "loopback"],
  ] as const
).map(([cidr, kind]) => {
  const [address = "", length = "0"] = cidr.split("/");
  return { cidr, kind, bytes: parseIp(address), length: Number(length) };
});

function inPrefix(bytes: Uint8Array, prefix: Prefix): boolean {
  if (bytes.length !== prefix.bytes.length) return false;
  for (let bit = 0; bit < prefix.length; bit += 8) {
    const bits = Math.min(8, prefix.length - bit);
    const mask = (0xff << (8 - bits)) & 0xff;
    const i = bit / 8;
    if (((bytes[i] ?? 0) & mask) !== ((prefix.bytes[i] ?? 0) & mask)) return false;
  }
  return true;
}

/**
 * The special-purpose block `ip` is in, or null for a public (globally
 * routed) address. IPv4-mapped IPv6 addresses are judged as IPv4. Throws
 * SyntaxError for text that is not an address.
 */
export function addressBlock(ip: string): AddressBlock | null {
  let bytes = parseIp(ip);
  if (
    bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff
  ) {
    bytes = bytes.slice(12);
  }
  const found = BLOCKS.find((prefix) => inPrefix(bytes, prefix));
  return found === undefined ? null : { cidr: found.cidr, kind: found.kind };
}

/**
 * True when the host's source address and the destination are in the same
 * special-purpose block: then a router's address cannot tell inside from
 * outside, and hop discovery does not probe.
 */
export function ambiguousRoute(source: string, destination: string): boolean {
  const block = addressBlock(destination);
  return block !== null && addressBlock(source)?.cidr === block.cidr;
}

/** Where a router that answered from `hop` stands, and why. */
export interface HopSide {
  side: "inside" | "outside";
  reason: string;
}

/**
 * Inside or outside the host's own NATs and firewalls:
 * - public address: outside;
 * - in the destination's special-purpose block (and the source is not): outside;
 * - any other special-purpose address: inside.
 */
export function hopSide(hop: string, route: { source: string; destination: string }): HopSide {
  const block = addressBlock(hop);
  if (block === null) return { side: "outside", reason: "public address" };
  const destination = addressBlock(route.destination);
  if (destination?.cidr === block.cidr && addressBlock(route.source)?.cidr !== block.cidr) {
    return { side: "outside", reason: `in the destination's block ${block.cidr}` };
  }
  return { side: "inside", reason: `${block.kind} address (${block.cidr})` };
}
