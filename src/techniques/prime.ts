/**
 * What `tcp-prime` and `udp-prime` share: the progress tags, the checks of
 * a request, the hop limit of the priming packet and the initiator's wait
 * for the responder's word that its firewall is primed.
 *
 * Priming (the SocketSynergy design): the responder sends a packet of
 * exactly the flow it wants to receive (its SRC_IP:SRC_PORT to the peer's
 * DST_IP:DST_PORT) with a hop limit that crosses its own stateful firewall
 * or NAT but dies before the peer's. Its firewall then holds an entry for
 * that one flow, and the peer's ordinary SYN (or datagram) of the same flow
 * is let in as its reply. The initiating side needs nothing special: no
 * privilege, no punchd (`nc -p PORT HOST PORT` does).
 *
 * Progress, on both techniques:
 *
 * ```
 *  initiator (punchd or the application)      responder (punchd)
 *  progress "prime1" (udp: "prime1:NONCE") ──► EXTRA
 *                                             primes: low-hop-limit SYN / datagram
 *  peer data "primed1" ◄────────────────────── progress "primed1"
 *  connect() / datagram ─────────────────────► its firewall lets it in
 * ```
 *
 * @module
 */

import type { HopFinder } from "../discovery/hop_limit.ts";
import type { AttemptSpec } from "./protocol.ts";
import { assertLowTtl, findLowTtl } from "./low_ttl.ts";
import type { AttemptContext } from "./technique.ts";
import { TechniqueError } from "../errors.ts";

/** The initiator's progress data (tcp-prime), and the EXTRA of a responder whose peer is not punchd. */
export const PRIME_TAG = "prime1";

/** The responder's progress data once its first priming packets have left. */
export const PRIMED_TAG = "primed1";

/**
 * The hop limit of the priming packet: the daemon's fixed `--nutss-ttl`
 * when given (spec.lowTtl), else what hop discovery finds toward DST_IP
 * (src/discovery/hop_limit.ts: cached per route, 2 when unknown); logged
 * with where it came from.
 */
export async function primingHopLimit(
  spec: AttemptSpec,
  hops: HopFinder,
  context: AttemptContext,
): Promise<number> {
  return await findLowTtl(hops, spec, context, "hop limit of the priming packet");
}

/** The checks both priming techniques share; throws RangeError with a client-facing reason. */
export function validatePrimeSpec(spec: AttemptSpec, name: string): void {
  if (spec.srcPorts.length !== 1) throw new RangeError(`${name} takes exactly one source port`);
  assertLowTtl(spec, name);
}

/**
 * The initiator's wait for the responder's {@linkcode PRIMED_TAG}: its
 * SYN or datagram would otherwise meet an unprimed firewall (dropped, or
 * answered by a NAT that then moves the port). Throws TechniqueError on
 * other peer data.
 */
export async function awaitPrimed(context: AttemptContext, name: string): Promise<void> {
  context.noteError(`waiting for the responder's "${PRIMED_TAG}"`);
  const data = await context.nextPeerData();
  if (data !== PRIMED_TAG) {
    throw new TechniqueError(`${name} expects the peer data "${PRIMED_TAG}"`);
  }
  context.noteError("");
}

/** The first of `connects` that resolves; the others are closed as they resolve. */
export async function firstConnected<T extends { close(): void }>(
  connects: Promise<T>[],
  context: AttemptContext,
  name: string,
): Promise<T> {
  try {
    const winner = await Promise.any(connects);
    // Late winners of other ports are closed as they arrive.
    for (const c of connects) c.then((s) => s !== winner && s.close(), () => {});
    return winner;
  } catch (error) {
    if (context.signal.aborted) throw context.signal.reason;
    const reasons = error instanceof AggregateError
      ? error.errors.map((e) => (e as Error).message)
      : [String(error)];
    throw new TechniqueError(`${name} failed: ${[...new Set(reasons)].join("; ")}`, {
      cause: error,
    });
  }
}
