/**
 * `udp` policy: when a punch may travel all the way, and when an attempt
 * has real evidence that it cannot succeed.
 *
 * Low TTL first. A NAT without an input firewall (most Linux routers
 * configured by hand) answers a datagram to a public port it has not mapped
 * with ICMP port unreachable and keeps an UNREPLIED conntrack entry for it.
 * When A's punch gets there before B's own first datagram, that entry holds
 * the reply tuple B's flow would need, so B's NAT moves B's flow to another
 * port and the punches never meet. So a side sends its punches with TTL
 * `lowTtl` (they open its own NAT and die before the peer's) until it knows
 * that the peer's mapping exists:
 *
 * ```
 *  initiator: punch(low TTL) ─► offer ─► … answer or a peer punch ─► punches at full TTL
 *  responder:                  offer ─► punch(full TTL) ─► answer
 * ```
 * The initiator's offer leaves after its first (low) punch, so the
 * responder's punches find the initiator's mapping; the responder's answer
 * leaves after its first punch, so once the initiator has it, its own
 * punches find the responder's mapping. A birthday hard side's punches
 * always stay low: they only have to open its own NAT for the easy side's
 * probes, and one that reached an answering easy NAT would take the very
 * port a probe needs.
 *
 * Giving up early (each a reason the client reads):
 * - both NATs map ports per destination ("h"): nothing can be predicted;
 * - plain `udp` (no birthday probing) with either NAT "h": the peer's
 *   punches come from a port nobody announced, and punches are accepted only
 *   from the announced ones;
 * - punches signed with the attempt's key keep arriving from the peer's
 *   address but another port for `movedMs`: the peer's NAT gave this flow
 *   another port, so punches to the announced one cannot reach it.
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import { errorCode } from "./delay.ts";

/** Which way a side's NAT maps ports: `e` predictable (or unknown), `h` per destination. */
export type Mode = "e" | "h";

/** errno names an ICMP error leaves on a connected UDP socket (read or cleared by the next call). */
const ICMP_ERRORS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENOPROTOOPT",
]);

/**
 * True when `error` is an ICMP error reported by a socket call. An
 * answering NAT's port unreachable is normal while punching: it says
 * nothing about the attempt.
 */
export function isIcmpError(error: unknown): boolean {
  return ICMP_ERRORS.has(errorCode(error));
}

/** Why `udp` cannot succeed from the two sides' modes, or null when it may. */
export function hopeless(mine: Mode, theirs: Mode | null, birthday: boolean): string | null {
  if (mine === "h" && theirs === "h") {
    return "udp gave up: both NATs map ports per destination (birthday probing needs one predictable side)";
  }
  if (birthday) return null;
  if (mine === "h") {
    return "udp gave up: this side's NAT maps ports per destination, so its punches leave from a port the peer does not expect (udp-birthday can get through)";
  }
  if (theirs === "h") {
    return "udp gave up: the peer's NAT maps ports per destination, so its punches leave from a port this side does not expect (udp-birthday can get through)";
  }
  return null;
}

/**
 * Sends one punch. With `ttl`, it leaves with that TTL (hop limit) or not at
 * all: the socket's TTL is set and restored around one non-blocking send,
 * so attempts that share the socket never send at each other's TTL. Send
 * errors are dropped (a punch is one of many).
 */
export async function sendPunch(
  socket: Socket,
  data: Uint8Array<ArrayBuffer>,
  to: SocketAddress,
  ttl: number | null,
  signal: AbortSignal,
): Promise<void> {
  if (ttl === null) {
    await socket.sendTo(data, to, signal).catch(() => {});
    return;
  }
  const once = new AbortController();
  const normal = socket.hopLimit();
  socket.setHopLimit(ttl);
  let sent: Promise<number>;
  try {
    // Runs synchronously up to its first wait; aborting right after stops a retry at the normal TTL.
    sent = socket.sendTo(data, to, once.signal);
  } finally {
    once.abort();
    socket.setHopLimit(normal);
  }
  await sent.catch(() => {});
}

/**
 * Evidence that the peer's NAT moved its flow: punches that carry the
 * attempt's MAC from the peer's address but a port it did not announce.
 */
export class MovedPeer {
  readonly #movedMs: number;
  readonly #now: () => number;
  #first = -1;
  #count = 0;
  #port = 0;

  /** `movedMs`: how long such punches must keep coming; `now`: a clock in milliseconds. */
  constructor(movedMs: number, now: () => number = () => performance.now()) {
    this.#movedMs = movedMs;
    this.#now = now;
  }

  /** Notes one such punch; returns the reason to give up once the evidence suffices, else null. */
  note(from: SocketAddress): string | null {
    if (from.family === "unix") return null;
    const now = this.#now();
    if (this.#first < 0) this.#first = now;
    this.#count++;
    this.#port = from.port;
    if (this.#count < 3 || now - this.#first < this.#movedMs) return null;
    return `udp gave up: for ${
      Math.round(now - this.#first)
    } ms the peer's punches came from port ${this.#port}, not from its announced port: its NAT gave this flow another port (one taken by an earlier flow, or a mapping per destination), so punches to the announced port cannot reach it`;
  }
}
