/**
 * `udp-prime`: the responder primes its own stateful firewall (or NAT) for
 * exactly the peer's endpoint with a datagram whose hop limit dies before
 * the peer's, then waits for the peer's ordinary datagram; the initiator
 * needs no punchd (`nc -u -p PORT HOST PORT` does).
 *
 * The responder's socket is bound to SRC_IP:SRC_PORT and connect()ed to
 * DST_IP:DST_PORT before it primes, so the kernel queues on it only
 * datagrams from exactly that address and port; whatever reached it
 * between bind() and connect() is discarded before the priming datagram
 * leaves. That socket is the one handed over, still connected.
 *
 * Two kinds of peer, told apart by the responder's EXTRA:
 *
 * - `prime1`: the peer is not punchd (nc, or any program). The first
 *   datagram queued on the socket makes it ready, and it stays queued: it
 *   is the peer's application data, which the application reads first.
 * - `prime1:NONCE` (NONCE: 16 lowercase hex digits): the peer is punchd,
 *   whose progress this is. Three messages of 31 bytes cross the flow,
 *   `punchd-prime1-` then a letter then NONCE:
 *
 * ```
 *  initiator                                   responder
 *  (after "primed1") ── h (every intervalMs) ──► takes it off, answers each
 *                    ◄────────────── a ───────
 *  ───────────────────── d ──────────────────► takes it off, hands over
 *  one a per h sent: hands over
 *  (else lingers, dropping late a)
 * ```
 *
 * The socket handed over carries a filter (SO_ATTACH_FILTER) that drops
 * every 31-byte datagram of `punchd-prime1-`, a letter and this attempt's
 * NONCE: a hello, ack or done that a busy peer sends late never reaches the
 * application. Everything else passes.
 *
 *   `d` is the last datagram the initiator sends, and its hellos left
 *   before it on the same path, so the responder hands over at once. The
 *   responder answers each hello it receives with one ack, so once the
 *   initiator holds as many acks as it sent hellos (one, unless the round
 *   trip exceeds `intervalMs` or a datagram was lost), no ack can follow
 *   and it hands over at once too. Otherwise it lingers until the acks
 *   missing have arrived, or for `lingerMs`, or as long as the exchange
 *   took since its first hello when that is longer (at most
 *   `5 × lingerMs`): the acks of the hellos it sent last are then still on
 *   their way. What this leaves: a hello reordered behind `d` (it would
 *   reach the responder's application), as one delayed beyond the old
 *   `lingerMs` linger after `d` could.
 *
 *   The initiator stops lingering at the first datagram that is not one
 *   of these: it is the other application's data, and stays queued; the
 *   same holds for the responder's wait for `d` (if `d` was lost, the
 *   initiator's first datagram ends the wait). At most `maxHellos` hellos
 *   per port.
 *
 * The priming datagram (`punchd-prime1-p`) is sent again every `primeMs`
 * until the peer's first hello (or datagram), and each ICMP error the socket reports
 * (e.g. port unreachable) is noted and waited past. A datagram is never
 * sent unbounded: at most `maxPrimes` primes and `maxHellos` hellos per
 * port, and only until the attempt's deadline.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { connect, recv, sendTo } from "../../ffi/syscalls.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { HopFinder } from "../discovery/hop_limit.ts";
import { TechniqueError } from "../errors.ts";
import { udpDropProgram } from "../packet/bpf.ts";
import { dropQueued } from "./udp_policy.ts";
import { delay, errorCode } from "./delay.ts";
import {
  awaitPrimed,
  firstConnected,
  PRIME_TAG,
  PRIMED_TAG,
  primingHopLimit,
  validatePrimeSpec,
} from "./prime.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** Tunables (injected in tests). */
export interface UdpPrimeOptions {
  /** Hop discovery and its cache (default: one per technique, i.e. per worker). */
  hops?: HopFinder;
  /** Milliseconds between the initiator's hellos (default 200). */
  intervalMs?: number;
  /** Milliseconds the initiator lingers when acks may still be on their way (default 400). */
  lingerMs?: number;
  /** Milliseconds between the responder's priming datagrams (default 2000). */
  primeMs?: number;
  /** Priming datagrams per port at most (default 10). */
  maxPrimes?: number;
  /** Hellos per port at most (default 50). */
  maxHellos?: number;
}

const PREFIX = "punchd-prime1-";
const NONCE_PATTERN = /^[0-9a-f]{16}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The datagram that primes the responder's firewall (it dies before the peer's). */
export const PRIME_DATAGRAM = `${PREFIX}p`;

/** A punchd initiator's progress data: `prime1:NONCE`. */
export function encodeUdpPrimeOffer(nonce: string): string {
  if (!NONCE_PATTERN.test(nonce)) throw new RangeError("udp-prime nonce must be 16 hex digits");
  return `${PRIME_TAG}:${nonce}`;
}

/** Parses the responder's EXTRA: the nonce of a punchd peer, or null for a plain peer. */
export function decodeUdpPrimeOffer(text: string): string | null {
  if (text === PRIME_TAG) return null;
  const nonce = text.startsWith(`${PRIME_TAG}:`) ? text.slice(PRIME_TAG.length + 1) : "";
  if (!NONCE_PATTERN.test(nonce)) {
    throw new SyntaxError(`udp-prime expects EXTRA "${PRIME_TAG}" or "${PRIME_TAG}:NONCE"`);
  }
  return nonce;
}

/** The hello (`h`), ack (`a`) or done (`d`) of an attempt. */
export function primeMessage(kind: "h" | "a" | "d", nonce: string): string {
  return `${PREFIX}${kind}${nonce}`;
}

function newNonce(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(8)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** The `udp-prime` technique. */
export class UdpPrime implements Technique {
  readonly name = "udp-prime";
  readonly #hops: HopFinder;
  readonly needsFirewall = false;
  readonly #intervalMs: number;
  readonly #lingerMs: number;
  readonly #primeMs: number;
  readonly #maxPrimes: number;
  readonly #maxHellos: number;

  /** Builds the technique with its tunables. */
  constructor(options: UdpPrimeOptions = {}) {
    this.#hops = options.hops ?? new HopFinder();
    this.#intervalMs = options.intervalMs ?? 200;
    this.#lingerMs = options.lingerMs ?? 400;
    this.#primeMs = options.primeMs ?? 2000;
    this.#maxPrimes = options.maxPrimes ?? 10;
    this.#maxHellos = options.maxHellos ?? 50;
  }

  validate(spec: AttemptSpec): void {
    validatePrimeSpec(spec, this.name);
    if (spec.role === "respond") decodeUdpPrimeOffer(spec.extra ?? "");
  }

  async run(spec: AttemptSpec, attempt: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const done = new AbortController();
    const context = { ...attempt, signal: AbortSignal.any([attempt.signal, done.signal]) };
    const sockets: Socket[] = [];
    try {
      // Every socket is connected before its first datagram leaves (see the module doc).
      for (const peer of peers) sockets.push(connectedSocket(local, peer));
      let waits: Promise<Socket>[];
      let nonce: string | null;
      if (spec.role === "respond") {
        nonce = decodeUdpPrimeOffer(spec.extra ?? "");
        const hops = await primingHopLimit(spec, this.#hops, context);
        for (const socket of sockets) discardQueued(socket);
        waits = sockets.map((socket, i) =>
          this.#respond(socket, peers[i] as InetAddress, hops, nonce, context)
        );
        context.progress(PRIMED_TAG);
      } else {
        const mine = newNonce();
        nonce = mine;
        context.progress(encodeUdpPrimeOffer(mine));
        await awaitPrimed(context, this.name);
        waits = sockets.map((socket, i) =>
          this.#initiate(socket, peers[i] as InetAddress, mine, context)
        );
      }
      const winner = await firstConnected(waits, context, this.name);
      sockets.splice(sockets.indexOf(winner), 1);
      if (nonce !== null) {
        try {
          await dropLateMessages(winner, nonce);
        } catch (error) {
          winner.close();
          throw error;
        }
      }
      return winner;
    } finally {
      done.abort(new TechniqueError("attempt finished"));
      for (const socket of sockets) socket.close();
    }
  }

  /** Primes (first datagram synchronously), then waits for the peer's (see the module doc). */
  async #respond(
    socket: Socket,
    peer: InetAddress,
    hops: number,
    nonce: string | null,
    context: AttemptContext,
  ): Promise<Socket> {
    const normal = socket.hopLimit();
    let primes = 0;
    const prime = () => {
      socket.setHopLimit(hops);
      try {
        // Sent now or not at all: a later send would leave with the normal hop limit.
        sendNow(socket, encoder.encode(PRIME_DATAGRAM), peer, context);
      } finally {
        socket.setHopLimit(normal);
      }
      primes++;
      context.log.debug("primed", { to: formatAddress(peer), hops, primes });
    };
    prime();
    const buf = new Uint8Array(64);
    let greeted = false;
    for (;;) {
      const wait = AbortSignal.any([context.signal, AbortSignal.timeout(this.#primeMs)]);
      let length: number;
      try {
        length = await socket.peek(buf, wait);
      } catch (error) {
        if (context.signal.aborted) throw error;
        if (wait.aborted) {
          if (primes < this.#maxPrimes && !greeted) prime();
          continue;
        }
        // An ICMP error of the flow, reported once: note it and wait on.
        context.noteError(`from ${formatAddress(peer)}: ${errorCode(error) || error}`);
        continue;
      }
      if (nonce === null) return socket;
      const text = decoder.decode(buf.subarray(0, Math.min(length, buf.length)));
      if (text === primeMessage("d", nonce)) {
        // The initiator's last datagram: every hello came before it.
        await socket.read(buf);
        return socket;
      }
      // The initiator's application data: its "done" was lost (it stays queued).
      if (greeted && !text.startsWith(PREFIX)) return socket;
      await socket.read(buf);
      if (text !== primeMessage("h", nonce)) {
        context.log.debug("discarded a datagram that is not the hello", { length });
        continue;
      }
      greeted = true;
      sendNow(socket, encoder.encode(primeMessage("a", nonce)), peer, context);
    }
  }

  /** Sends hellos every `intervalMs` until the ack, then lingers. */
  async #initiate(
    socket: Socket,
    peer: InetAddress,
    nonce: string,
    context: AttemptContext,
  ): Promise<Socket> {
    const hello = encoder.encode(primeMessage("h", nonce));
    const ack = primeMessage("a", nonce);
    const done = encoder.encode(primeMessage("d", nonce));
    const buf = new Uint8Array(64);
    const first = performance.now();
    for (let sent = 0; sent < this.#maxHellos; sent++) {
      sendNow(socket, hello, peer, context);
      const until = AbortSignal.any([context.signal, AbortSignal.timeout(this.#intervalMs)]);
      try {
        for (;;) {
          const length = await socket.read(buf, until);
          if (decoder.decode(buf.subarray(0, Math.min(length, buf.length))) === ack) {
            sendNow(socket, done, peer, context);
            // One ack per hello: those of the other `sent` hellos may still come.
            if (sent === 0) return socket;
            const took = performance.now() - first;
            const lingerMs = Math.min(Math.max(this.#lingerMs, took), 5 * this.#lingerMs);
            await this.#linger(socket, [ack, PRIME_DATAGRAM], lingerMs, context, {
              ack,
              missing: sent,
            });
            return socket;
          }
        }
      } catch (error) {
        if (context.signal.aborted) throw error;
        if (until.aborted) continue;
        // An ICMP error of the flow (e.g. port unreachable): the next hello after the interval.
        context.noteError(`from ${formatAddress(peer)}: ${errorCode(error)}`);
        await delay(this.#intervalMs, context.signal);
      }
    }
    throw new TechniqueError(`no answer from ${formatAddress(peer)} to ${this.#maxHellos} hellos`);
  }

  /**
   * For `lingerMs`: takes datagrams of `discard` off the queue; stops at
   * the first other datagram, which stays queued for the application, or
   * once `missing` more of `ack` have been taken (no other can come).
   */
  async #linger(
    socket: Socket,
    discard: string[],
    lingerMs: number,
    context: AttemptContext,
    acks: { ack: string; missing: number },
  ): Promise<void> {
    const until = AbortSignal.any([context.signal, AbortSignal.timeout(lingerMs)]);
    const buf = new Uint8Array(64);
    let missing = acks.missing;
    try {
      while (missing > 0) {
        const length = await socket.peek(buf, until);
        const text = decoder.decode(buf.subarray(0, Math.min(length, buf.length)));
        if (!discard.includes(text)) return;
        await socket.read(buf);
        if (text === acks.ack) missing--;
      }
    } catch (error) {
      if (context.signal.aborted) throw error;
      // The linger ran out (or an ICMP error ended it): done either way.
    }
  }
}

/** A datagram socket bound to `local` and connect()ed to `peer`. */
function connectedSocket(local: InetAddress, peer: InetAddress): Socket {
  const socket = Socket.create(local.family, "datagram", { reuseAddress: true, reusePort: true });
  try {
    socket.bind(local);
    // A datagram socket connects at once (no packet): from now on only `peer`'s datagrams queue.
    connect(socket.fd, peer);
    return socket;
  } catch (error) {
    socket.close();
    throw error;
  }
}

/** Drops every datagram queued on `socket` (it came before connect(), from anyone). */
function discardQueued(socket: Socket): void {
  const buf = new Uint8Array(1);
  for (let i = 0; i < 10_000; i++) {
    try {
      if (recv(socket.fd, buf) === null) return;
    } catch {
      // A pending ICMP error is consumed by the call that reports it.
    }
  }
}

/**
 * Sends one datagram now, or not at all (a full send buffer: the caller's
 * next round sends again). A pending ICMP error of the flow fails the
 * first try and is cleared by it; the second try then sends.
 */
function sendNow(
  socket: Socket,
  data: Uint8Array<ArrayBuffer>,
  peer: InetAddress,
  context: AttemptContext,
): void {
  for (let i = 0; i < 2; i++) {
    try {
      sendTo(socket.fd, data, peer);
      return;
    } catch (error) {
      context.noteError(`to ${formatAddress(peer)}: ${errorCode(error)}`);
    }
  }
}

/**
 * Keeps the peer punchd's late messages of this attempt (a hello, ack or
 * done sent before it knew this side was done, which a busy peer can send
 * seconds late) from the application: a socket filter drops every 31-byte
 * datagram that is `punchd-prime1-`, a letter and this attempt's NONCE, and
 * those queued before it are taken off. Application data stays queued.
 */
async function dropLateMessages(socket: Socket, nonce: string): Promise<void> {
  const encoder = new TextEncoder();
  const length = primeMessage("h", nonce).length;
  socket.attachFilter(udpDropProgram(length, [
    { offset: 0, bytes: encoder.encode(PREFIX) },
    { offset: PREFIX.length + 1, bytes: encoder.encode(nonce) },
  ]));
  const late = new Set(["h", "a", "d"].map((k) => primeMessage(k as "h" | "a" | "d", nonce)));
  const decoder = new TextDecoder();
  await dropQueued(socket, (bytes) => late.has(decoder.decode(bytes)));
}
