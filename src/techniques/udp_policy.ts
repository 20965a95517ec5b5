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
 * Giving up early (each a reason the client reads), only on evidence:
 * - birthday probing, both NATs map ports per destination ("h"): nothing
 *   can be predicted;
 * - punches signed with the attempt's key keep arriving from the peer's
 *   address but another port for `movedMs`: the peer's NAT gave this flow
 *   another port, so punches to the announced one cannot reach it;
 * - birthday probing, the easy side has sent all its probes and no answer
 *   came within a grace period: no mapping of the hard side was hit;
 * - once the peer's mapping exists (the responder from the start, the
 *   initiator once it holds the answer), its address keeps answering this
 *   side's punches to the announced endpoint with ICMP port unreachable for
 *   `movedMs`: an answering NAT without a flow for them, so one of the NATs
 *   gave its flow another port than announced.
 * A side that gives up on its own evidence tells the peer with the progress
 * line `udp2x:CODE` (the application forwards it like the others), and the
 * peer gives up too instead of waiting for its deadline. An ICMP error by
 * itself is no evidence (an answering NAT refuses early punches as a matter
 * of course, and low-TTL punches come back as time exceeded): only refusals
 * that persist after the peer's mapping exists count, and no ICMP error
 * ends a receive or a send.
 *
 * @module
 */

import { SO_ERROR, SOL_SOCKET } from "../../ffi/constants.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import type { ExtendedError, QueuedError } from "../../ffi/errqueue.ts";
import { TechniqueError } from "../errors.ts";
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

/**
 * Takes the datagrams at the front of `socket`'s queue that `late` holds
 * for (the peer's late punches or messages, seen through their first 128
 * bytes) off the socket without waiting, at most 64; stops at the first
 * other datagram, which stays queued for the application, or when nothing
 * is queued. An ICMP error met on the way is read, and so cleared.
 */
export async function dropQueued(
  socket: Socket,
  late: (bytes: Uint8Array) => boolean,
): Promise<void> {
  const buf = new Uint8Array(128);
  const now = AbortSignal.abort();
  for (let i = 0; i < 64; i++) {
    try {
      const n = await socket.peek(buf, now);
      if (!late(buf.subarray(0, n))) return;
      await socket.read(buf);
    } catch (error) {
      // An ICMP error was read (and so cleared); anything else: nothing is queued.
      if (!isIcmpError(error)) return;
    }
  }
}

/**
 * Why `udp` cannot succeed from the two sides' modes, or null when it may.
 * Only birthday probing classifies the NAT (plain `udp` does not: the
 * probes' flows would take the ports a sequential NAT's prediction needs).
 */
export function hopeless(mine: Mode, theirs: Mode | null): string | null {
  if (mine === "h" && theirs === "h") {
    return "udp gave up: both NATs map ports per destination (birthday probing needs one predictable side)";
  }
  return null;
}

/** The codes of `udp2x:CODE` and what the peer that receives one reports. */
const NOTICES = {
  moved:
    "its punches reached the peer from another port than announced (this side's NAT moved the flow)",
  probes: "the peer's birthday probes hit none of this side's ports",
  refused:
    "this side's NAT refused the peer's punches (ICMP port unreachable): one of the NATs gave its flow another port than announced",
} as const;

/** A code of the `udp2x:CODE` progress line. */
export type NoticeCode = keyof typeof NOTICES;

/** The progress line that tells the peer this side gave up. */
export function encodeNotice(code: NoticeCode): string {
  return `udp2x:${code}`;
}

/** The reason to give up on the peer's `udp2x:CODE` line, or null when `data` is not one. */
export function decodeNotice(data: string): string | null {
  const m = data.match(/^udp2x:([a-z]{1,16})$/);
  if (m === null) return null;
  const code = m[1] ?? "";
  const why = Object.hasOwn(NOTICES, code) ? NOTICES[code as NoticeCode] : `code ${code}`;
  return `udp gave up: the peer gave up: ${why}`;
}

/** Giving up on this side's own evidence; `notice` is what the peer is told. */
export class GiveUp extends TechniqueError {
  readonly notice: NoticeCode;

  /** Builds the error with the client-facing reason and the code the peer gets. */
  constructor(notice: NoticeCode, reason: string) {
    super(reason);
    this.name = "GiveUp";
    this.notice = notice;
  }
}

/**
 * Sends one punch. With `ttl`, it leaves with that TTL (hop limit) or not at
 * all: the socket's TTL is set and restored around one non-blocking send,
 * so attempts that share the socket never send at each other's TTL. Send
 * errors are dropped (a punch is one of many). A pending socket error (an
 * ICMP error on a socket that queues them) is cleared first: the kernel
 * would otherwise fail this send with it instead of sending. Nothing is
 * sent once `signal` has aborted: the attempt's hand-over relies on no
 * punch leaving after its LAST (see `udp.ts`).
 */
export async function sendPunch(
  socket: Socket,
  data: Uint8Array<ArrayBuffer>,
  to: SocketAddress,
  ttl: number | null,
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return;
  socket.getOption(SOL_SOCKET, SO_ERROR);
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

/** Evidence that lasts: at least 3 observations spanning `spanMs`. */
export class Persistent {
  readonly #spanMs: number;
  readonly #now: () => number;
  #first = -1;
  #count = 0;

  /** `now` is a clock in milliseconds (injected in tests). */
  constructor(spanMs: number, now: () => number = () => performance.now()) {
    this.#spanMs = spanMs;
    this.#now = now;
  }

  /** Notes one observation; returns how long the evidence has lasted once it suffices, else null. */
  note(): number | null {
    const now = this.#now();
    if (this.#first < 0) this.#first = now;
    this.#count++;
    if (this.#count < 3 || now - this.#first < this.#spanMs) return null;
    return Math.round(now - this.#first);
  }
}

/**
 * Evidence that the peer's NAT moved its flow: punches that carry the
 * attempt's MAC from the peer's address but a port it did not announce.
 */
export class MovedPeer {
  readonly #evidence: Persistent;

  /** `movedMs`: how long such punches must keep coming; `now`: a clock in milliseconds. */
  constructor(movedMs: number, now: () => number = () => performance.now()) {
    this.#evidence = new Persistent(movedMs, now);
  }

  /** Notes one such punch; returns the reason to give up once the evidence suffices, else null. */
  note(from: SocketAddress): string | null {
    if (from.family === "unix") return null;
    const ms = this.#evidence.note();
    if (ms === null) return null;
    return `udp gave up: for ${ms} ms the peer's punches came from port ${from.port}, not from its announced port: its NAT gave this flow another port (one taken by an earlier flow, or a mapping per destination), so punches to the announced port cannot reach it`;
  }
}

/** True for an ICMP (or ICMPv6) port unreachable. */
export function isPortUnreachable(e: ExtendedError): boolean {
  return (e.origin === "icmp" && e.type === 3 && e.code === 3) ||
    (e.origin === "icmp6" && e.type === 1 && e.code === 4);
}

/**
 * Evidence that the peer's NAT refuses this side's punches although the
 * peer's mapping exists: ICMP port unreachable from the peer's address for
 * punches to its announced endpoint. Either NAT gave its flow another port
 * than announced (this side's maps per destination, or either moved a flow).
 */
export class RefusedPunches {
  readonly #evidence: Persistent;

  /** `refusedMs`: how long the refusals must keep coming; `now`: a clock in milliseconds. */
  constructor(refusedMs: number, now: () => number = () => performance.now()) {
    this.#evidence = new Persistent(refusedMs, now);
  }

  /**
   * Notes one queued error if it is such a refusal (`peer`: the peer's
   * address and announced endpoints); returns the reason to give up once
   * the evidence suffices, else null.
   */
  note(e: QueuedError, peer: { ip: string; endpoints: readonly SocketAddress[] }): string | null {
    const to = e.destination;
    if (!isPortUnreachable(e) || e.offender !== peer.ip || to === null || to.family === "unix") {
      return null;
    }
    const announced = peer.endpoints.some((p) =>
      p.family === to.family && p.address === to.address && p.port === to.port
    );
    if (!announced) return null;
    const ms = this.#evidence.note();
    if (ms === null) return null;
    return `udp gave up: for ${ms} ms the peer's NAT refused this side's punches to port ${to.port} (ICMP port unreachable) although the peer's mapping exists: one of the NATs gave its flow another port than announced`;
  }
}
