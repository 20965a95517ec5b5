/**
 * TTL-limited UDP probes toward a destination, one hop further at a time,
 * until the first router outside the host's own NATs and firewalls answers.
 * Each router's ICMP time-exceeded comes back through the NATs (they
 * translate related ICMP errors) into the probe socket's error queue, with
 * the router's address as the offender (ffi/errqueue.ts): no raw socket and
 * no privilege.
 *
 * ```
 *  TTL 1 ─► home router      time-exceeded from 10.0.1.1    inside, go on
 *  TTL 2 ─► carrier NAT      time-exceeded from 100.64.1.1  inside, go on
 *  TTL 3 ─► first ISP router time-exceeded from a public IP outside: stop, answer 3
 * ```
 *
 * Probing stops at the first router outside (so no probe reaches the peer's
 * NAT as long as one router stands between the two), at the first silent hop
 * (taken as the first outside: no probe goes beyond a hop whose side is
 * unknown), at any other ICMP error, and after `maxProbes` datagrams in all.
 *
 * @module
 */

import { enableErrorQueue, nextQueuedError, readErrorQueue } from "../../ffi/errqueue.ts";
import { Socket } from "../../ffi/socket.ts";
import { canonicalIp } from "../../ffi/ip.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { ambiguousRoute, hopSide } from "./address_class.ts";

/** The route to probe: the host's source address (wildcard allowed) and the destination. */
export interface HopRoute {
  source: string;
  destination: string;
}

/** What one hop said. */
export interface HopObservation {
  ttl: number;
  /** The router's address; null when it stayed silent. */
  address: string | null;
  side: "inside" | "outside" | "silent" | "destination" | "unreachable";
  reason: string;
}

/** The outcome of one discovery. */
export interface HopDiscovery {
  /** The TTL at which a probe dies at the first router outside; null when unknown. */
  firstOutside: number | null;
  /** One line on how the answer was found (or why not). */
  reason: string;
  hops: HopObservation[];
  /** Datagrams sent. */
  probes: number;
}

/** Probe tunables. */
export interface HopProbeOptions {
  /** Datagrams at most, retries included (default 8). */
  maxProbes?: number;
  /** Highest TTL tried (default 8). */
  maxHops?: number;
  /** Probes per TTL before the hop counts as silent (default 2). */
  triesPerHop?: number;
  /** Milliseconds to wait for each probe's answer (default 400). */
  probeTimeoutMs?: number;
  /** Destination port of the first probe; each next probe uses the next port (default 33434). */
  firstPort?: number;
}

const PAYLOAD = new TextEncoder().encode("punchd hop probe");
const TIME_EXCEEDED = { icmp: 11, icmp6: 3 } as const;
const UNREACHABLE = { icmp: 3, icmp6: 1 } as const;

function isWildcard(ip: string): boolean {
  return ip === "0.0.0.0" || ip === "::";
}

/** The source address the kernel would pick toward `destination` (connect on UDP sends nothing). */
async function routeSource(
  family: "inet" | "inet6",
  destination: string,
  port: number,
): Promise<string> {
  const socket = Socket.create(family, "datagram");
  try {
    await socket.connect(inetAddress(destination, port));
    const local = socket.localAddress();
    return local.family === "unix" ? "" : local.address;
  } finally {
    socket.close();
  }
}

/** Probes the route hop by hop; see the module comment. Rejects only when `signal` aborts. */
export async function probeHops(
  route: HopRoute,
  signal: AbortSignal,
  options: HopProbeOptions = {},
): Promise<HopDiscovery> {
  const maxProbes = options.maxProbes ?? 8;
  const maxHops = options.maxHops ?? 8;
  const tries = options.triesPerHop ?? 2;
  const timeoutMs = options.probeTimeoutMs ?? 400;
  const firstPort = options.firstPort ?? 33434;
  let destination: string;
  try {
    destination = canonicalIp(route.destination);
  } catch (error) {
    throw new TypeError(`Cannot probe hops to "${route.destination}"`, { cause: error });
  }
  const family = destination.includes(":") ? "inet6" : "inet";
  const hops: HopObservation[] = [];
  let probes = 0;
  const result = (firstOutside: number | null, reason: string): HopDiscovery => ({
    firstOutside,
    reason,
    hops,
    probes,
  });
  let source: string;
  try {
    source = isWildcard(route.source)
      ? await routeSource(family, destination, firstPort)
      : route.source;
  } catch (error) {
    return result(null, `no route to ${destination}: ${(error as Error).message}`);
  }
  if (ambiguousRoute(source, destination)) {
    return result(
      null,
      `${source} and ${destination} are in one special-purpose block: addresses cannot tell inside from outside`,
    );
  }
  const socket = Socket.create(family, "datagram");
  try {
    socket.bind(inetAddress(source, 0));
    enableErrorQueue(socket);
    for (let ttl = 1; ttl <= maxHops; ttl++) {
      let answer: Awaited<ReturnType<typeof nextQueuedError>> | null = null;
      for (let attempt = 0; attempt < tries && answer === null; attempt++) {
        if (probes >= maxProbes) {
          return result(null, `no router outside within ${probes} probes`);
        }
        const port = firstPort + probes;
        while (readErrorQueue(socket) !== null) {
          // Late answers to earlier probes: the queue must be empty before the next one.
        }
        socket.setHopLimit(ttl);
        probes++;
        try {
          await socket.sendTo(PAYLOAD, inetAddress(destination, port), signal);
        } catch {
          if (signal.aborted) throw signal.reason;
          continue; // a pending error of an earlier probe; this one counts as lost
        }
        answer = await answerTo(socket, destination, port, timeoutMs, signal);
      }
      if (answer === null) {
        hops.push({ ttl, address: null, side: "silent", reason: `no answer to ${tries} probes` });
        return result(ttl, `hop ${ttl} is silent; taken as the first outside`);
      }
      const origin = answer.origin === "icmp6" ? "icmp6" : "icmp";
      const address = answer.offender;
      if (address === null) {
        hops.push({ ttl, address, side: "silent", reason: "an ICMP error without its sender" });
        return result(null, `hop ${ttl} answered without its address`);
      }
      if (canonicalIp(address) === destination) {
        hops.push({ ttl, address, side: "destination", reason: "the destination itself" });
        return result(null, `reached ${address} at hop ${ttl} before any router outside`);
      }
      if (answer.type === UNREACHABLE[origin]) {
        hops.push({
          ttl,
          address,
          side: "unreachable",
          reason: `unreachable (code ${answer.code})`,
        });
        return result(null, `hop ${ttl} (${address}) says unreachable`);
      }
      if (answer.type !== TIME_EXCEEDED[origin]) {
        hops.push({ ttl, address, side: "unreachable", reason: `ICMP type ${answer.type}` });
        return result(null, `hop ${ttl} (${address}) sent ICMP type ${answer.type}`);
      }
      const { side, reason } = hopSide(address, { source, destination: destination });
      hops.push({ ttl, address, side, reason });
      if (side === "outside") {
        return result(ttl, `hop ${ttl} (${address}) is the first outside: ${reason}`);
      }
    }
    return result(null, `no router outside within ${maxHops} hops`);
  } finally {
    socket.close();
  }
}

/** The queued error that answers the probe sent to `destination:port`, or null after `timeoutMs`. */
async function answerTo(
  socket: Socket,
  destination: string,
  port: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Awaited<ReturnType<typeof nextQueuedError>> | null> {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  const wait = AbortSignal.any([signal, timeout.signal]);
  try {
    for (;;) {
      const queued = await nextQueuedError(socket, wait);
      const to = queued.destination;
      if (
        to !== null && to.family !== "unix" && canonicalIp(to.address) === destination &&
        to.port === port
      ) {
        return queued;
      }
    }
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (timeout.signal.aborted) return null;
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
