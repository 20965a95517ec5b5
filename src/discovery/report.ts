/**
 * The NAT report behind the `report` request: what the host's NATs do, per
 * address family, found with the configured discovery servers (STUN, or
 * punchd rendezvous probe ports) like a network-check command.
 *
 * Per family with at least one server: the public address and how UDP and
 * TCP flows are mapped (endpoint discovery on a fresh port), RFC 5780
 * mapping and filtering (with a server that has OTHER-ADDRESS), whether the
 * NAT preserves ports, whether it hairpins (RFC 5780 section 4.6: a
 * datagram to one's own mapped address comes back), and the hops to leave
 * the host's own NATs (TTL-limited probes toward the first server). Traffic
 * goes only to the servers and to the host's own mapped address; every
 * part is bounded by the caller's signal.
 *
 * @module
 */

import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { Socket } from "../../ffi/socket.ts";
import { interfaceAddresses } from "../../ffi/ifaddrs.ts";
import type { FamilyReport, NatReport } from "../control/status.ts";
import { discoverEndpoint } from "./endpoint.ts";
import { classifyNat } from "./nat_behavior.ts";
import { bindingUdp } from "./stun_client.ts";
import { probeHops } from "./hop_probe.ts";

/** What the report's parts may use, for tests. */
export interface ReportOptions {
  /** The host's own addresses (default: the interfaces'). */
  localAddresses?: () => string[];
  /** Milliseconds to wait for a hairpinned datagram (default 600). */
  hairpinWaitMs?: number;
}

const WILDCARD = { inet: "0.0.0.0", inet6: "::" } as const;

/** A report that knows nothing yet, with `notes`. */
function emptyFamily(notes: string[]): FamilyReport {
  return {
    public: null,
    mapping: null,
    tcpMapping: null,
    rfc5780: null,
    portPreservation: null,
    hairpin: null,
    hops: null,
    notes,
  };
}

/** A free local port of `type` (bound and released: the caller binds it again at once). */
function freePort(family: "inet" | "inet6", type: "stream" | "datagram"): number {
  using socket = Socket.create(family, type);
  socket.bind(inetAddress(WILDCARD[family], 0));
  const local = socket.localAddress();
  return local.family === "unix" ? 0 : local.port;
}

/** Calls a mapping HOW by the name the report uses. */
function mappingName(how: string, notNated: boolean): string {
  if (notNated) return "none";
  return how === "preserved" ? "preserving" : how;
}

/**
 * Hairpinning: from a socket whose mapped address is known, a datagram to that address comes
 * back through the NAT. True, false, or null when the path cannot tell (no answer to learn the
 * mapping).
 */
async function hairpin(
  family: "inet" | "inet6",
  server: InetAddress,
  signal: AbortSignal,
  waitMs: number,
): Promise<boolean | null> {
  using socket = Socket.create(family, "datagram");
  socket.bind(inetAddress(WILDCARD[family], 0));
  const first = await bindingUdp(socket, server, signal, { rtoMs: 400, tries: 2 });
  if (first === null) return null;
  const nonce = crypto.getRandomValues(new Uint8Array(16));
  const buf = new Uint8Array(64);
  for (let attempt = 0; attempt < 2; attempt++) {
    await socket.sendTo(nonce, first.mapped, signal);
    const window = AbortSignal.any([signal, AbortSignal.timeout(waitMs)]);
    try {
      for (;;) {
        const { length } = await socket.receiveFrom(buf, window);
        if (length === nonce.length && buf.subarray(0, length).every((b, i) => b === nonce[i])) {
          return true;
        }
      }
    } catch (error) {
      if (signal.aborted) throw error;
    }
  }
  return false;
}

async function part<T>(
  notes: string[],
  what: string,
  run: () => Promise<T>,
): Promise<T | null> {
  try {
    return await run();
  } catch (error) {
    notes.push(`${what}: ${(error as Error).message}`);
    return null;
  }
}

async function familyReport(
  family: "inet" | "inet6",
  servers: readonly InetAddress[],
  signal: AbortSignal,
  options: ReportOptions,
): Promise<FamilyReport> {
  const first = servers[0];
  if (first === undefined) {
    return emptyFamily([`no ${family === "inet" ? "IPv4" : "IPv6"} discovery server (--stun)`]);
  }
  const notes: string[] = [];
  const report = emptyFamily(notes);
  const locals = new Set(
    (options.localAddresses ?? (() => interfaceAddresses().map((a) => a.address)))(),
  );
  const udp = await part(notes, "udp mapping", () => {
    const port = freePort(family, "datagram");
    return discoverEndpoint("udp", WILDCARD[family], [port], servers, signal).then((p) => ({
      ...p,
      port,
    }));
  });
  if (udp !== null) {
    const notNated = locals.has(udp.ip);
    report.public = udp.ip;
    report.mapping = mappingName(udp.how, notNated);
    report.portPreservation = udp.how === "preserved";
  }
  const tcp = await part(notes, "tcp mapping", () => {
    const port = freePort(family, "stream");
    return discoverEndpoint("tcp", WILDCARD[family], [port], servers, signal);
  });
  if (tcp !== null) {
    report.public ??= tcp.ip;
    report.tcpMapping = mappingName(tcp.how, locals.has(tcp.ip));
    if (udp !== null && tcp.ip !== udp.ip) {
      notes.push(`tcp leaves from ${tcp.ip}, udp from ${udp.ip}`);
    }
  }
  const behavior = await part(
    notes,
    "RFC 5780",
    () => classifyNat(WILDCARD[family], first, signal),
  );
  if (behavior !== null) {
    report.rfc5780 = { mapping: behavior.mapping, filtering: behavior.filtering };
  } else if (!notes.some((n) => n.startsWith("RFC 5780"))) {
    notes.push(`RFC 5780: ${formatAddress(first)} has no OTHER-ADDRESS; filtering unknown`);
  }
  if (report.mapping === "none") {
    notes.push("not behind a NAT toward the servers: hairpinning does not apply");
  } else if (report.public !== null) {
    report.hairpin = await part(
      notes,
      "hairpin",
      () => hairpin(family, first, signal, options.hairpinWaitMs ?? 600),
    );
  }
  const hops = await part(
    notes,
    "hops",
    () => probeHops({ source: WILDCARD[family], destination: first.address }, signal),
  );
  if (hops !== null) {
    // Every router before the first outside one (or before the server itself, when the probes
    // reached it first) belongs to the host's own NATs and firewalls.
    const reached = hops.hops.find((h) => h.side === "destination");
    if (hops.firstOutside !== null) report.hops = hops.firstOutside - 1;
    else if (reached !== undefined) report.hops = reached.ttl - 1;
    notes.push(`hops: ${hops.reason}`);
  }
  return report;
}

/** The NAT report toward `servers` (both families run at once). */
export async function natReport(
  servers: readonly InetAddress[],
  signal: AbortSignal,
  options: ReportOptions = {},
): Promise<NatReport> {
  const started = performance.now();
  const [ipv4, ipv6] = await Promise.all([
    familyReport("inet", servers.filter((s) => s.family === "inet"), signal, options),
    familyReport("inet6", servers.filter((s) => s.family === "inet6"), signal, options),
  ]);
  return {
    servers: servers.map(formatAddress),
    ipv4,
    ipv6,
    ms: Math.round(performance.now() - started),
  };
}
