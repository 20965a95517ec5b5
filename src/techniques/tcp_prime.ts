/**
 * `tcp-prime`: the responder primes its own stateful firewall (or NAT) for
 * exactly the peer's endpoint, then the initiator makes an ordinary
 * connect(): the SocketSynergy design. The initiator needs no punchd.
 *
 * On the wire (B responds from B:pB behind its firewall FB, A initiates
 * from A:pA; SEG(seq, ack)):
 *
 * ```
 *  A (initiator: punchd or nc)               B (responder)
 *                                             guards: drop ICMP time-exceeded
 *                                               quoting the flow, outgoing RSTs,
 *                                               inbound SYN-ACKs whose ack is not b+1
 *         X◄──────────────────────── SYN(b) ── connect(), ISN b, hop limit low:
 *                                               FB's entry B:pB -> A:pA (SYN_SENT)
 *  peer data "primed1" ◄───────────────────── progress "primed1"
 *  connect() ──SYN(a)─────────────────────► FB lets it in (reply of its entry);
 *                                             B's socket, SYN_SENT, takes it:
 *                                             simultaneous open
 *  ESTABLISHED ◄─────────── SYN-ACK(b, a+1) ─ SYN_RECV
 *  ──────────── ACK(a+1, b+1) ──────────────► ESTABLISHED
 * ```
 *
 * - B's priming SYN comes from the very socket that ends up connected, so
 *   the sequence number the firewall's conntrack recorded for the flow is
 *   the one the connection uses (a SYN from another socket would leave the
 *   firewall a window that B's SYN-ACK lies outside of), and B answers A's
 *   SYN with a SYN-ACK of the flow FB opened for a SYN (a SYN-ACK opening a
 *   flow is invalid to conntrack).
 * - The priming SYN leaves with the hop limit of {@linkcode primingHopLimit}
 *   and the normal one is restored right after connect() sent it: B's
 *   kernel retransmits it at the normal hop limit, and its SYN-ACK travels
 *   normally. The time-exceeded guard keeps the ICMP error the priming SYN
 *   provokes from aborting the connect (Linux would report EHOSTUNREACH).
 * - B's ISN is its own choice ({@linkcode presetIsn}), so the syn-ack
 *   guard is in before the SYN leaves (tcp_flow_guard.ts).
 * - B never listens: only a segment of the exact 4-tuple reaches the
 *   connecting socket, so a SYN from any other address or port is never
 *   handed over (its firewall drops it before that anyway).
 * - B's connects that fail early (an RST, a hard ICMP error) are primed
 *   again every `retryMs` with the same ISN, until the attempt's deadline.
 *
 * A (punchd) sends `prime1` as its progress, waits for `primed1` as peer
 * data, then connects to each DST_PORT; a connect that fails early is
 * tried again every `retryMs`, one that has not completed in `connectMs`
 * is closed (a SYN_SENT socket closes without a packet) and made afresh,
 * at most `maxConnects` per port. The application whose peer is not punchd
 * passes `prime1` as EXTRA itself and tells its peer to connect once
 * punchd's progress says `primed1`.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { HopFinder } from "../discovery/hop_limit.ts";
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import {
  awaitPrimed,
  firstConnected,
  PRIME_TAG,
  PRIMED_TAG,
  primingHopLimit,
  validatePrimeSpec,
} from "./prime.ts";
import type { AttemptSpec } from "./protocol.ts";
import { attemptIsns, FlowGuard, presetIsn } from "./tcp_flow_guard.ts";
import type { AttemptContext, GuardPlan, Technique } from "./technique.ts";

/** Tunables (injected in tests). */
export interface TcpPrimeOptions {
  /** Hop discovery and its cache (default: one per technique, i.e. per worker). */
  hops?: HopFinder;
  /** Milliseconds between connects after an early failure, on both sides (default 300). */
  retryMs?: number;
  /** Milliseconds one initiator connect may wait before it is made afresh (default 3000). */
  connectMs?: number;
  /** Connects per port, on either side, at most (default 10: 3 s of refusals ends the attempt). */
  maxConnects?: number;
}

/** The `tcp-prime` technique. */
export class TcpPrime implements Technique {
  readonly name = "tcp-prime";
  readonly #hops: HopFinder;
  readonly needsFirewall = true;
  readonly #retryMs: number;
  readonly #connectMs: number;
  readonly #maxConnects: number;

  /** Builds the technique with its tunables. */
  constructor(options: TcpPrimeOptions = {}) {
    this.#hops = options.hops ?? new HopFinder();
    this.#retryMs = options.retryMs ?? 300;
    this.#connectMs = options.connectMs ?? 3000;
    this.#maxConnects = options.maxConnects ?? 10;
  }

  guardPlan(spec: AttemptSpec): GuardPlan | null {
    return spec.role === "respond" ? { extra: ["time-exceeded"] } : null;
  }

  validate(spec: AttemptSpec): void {
    validatePrimeSpec(spec, this.name);
    if (spec.role === "respond" && spec.extra !== PRIME_TAG) {
      throw new SyntaxError(`tcp-prime expects EXTRA "${PRIME_TAG}"`);
    }
  }

  async run(spec: AttemptSpec, attempt: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    // Once one port connects, the loops of the other ports stop too.
    const done = new AbortController();
    const context = { ...attempt, signal: AbortSignal.any([attempt.signal, done.signal]) };
    try {
      let connects: Promise<Socket>[];
      if (spec.role === "respond") {
        const hops = await primingHopLimit(spec, this.#hops, context);
        const isns = attemptIsns(spec, peers.length);
        await Promise.all(
          peers.map((peer, i) =>
            FlowGuard.install(context, local, peer, isns[i] ?? 0, ["time-exceeded"])
          ),
        );
        // Each loop sends its priming SYN before its first await: the progress follows them.
        connects = peers.map((peer, i) =>
          this.#primeUntilConnected(local, peer, isns[i] ?? 0, hops, context)
        );
        context.progress(PRIMED_TAG);
      } else {
        context.progress(PRIME_TAG);
        await awaitPrimed(context, this.name);
        connects = peers.map((peer) => this.#connectUntilConnected(local, peer, context));
      }
      return await firstConnected(connects, context, this.name);
    } finally {
      done.abort(new TechniqueError("attempt finished"));
    }
  }

  /**
   * The responder's loop: a socket of the flow connects with ISN `isn`,
   * its SYN leaving with `hops`, and waits for the peer's SYN; an early
   * failure primes again after `retryMs`.
   */
  async #primeUntilConnected(
    local: InetAddress,
    peer: InetAddress,
    isn: number,
    hops: number,
    context: AttemptContext,
  ): Promise<Socket> {
    for (let round = 1;; round++) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      try {
        socket.bind(local);
        presetIsn(socket, isn);
        const normal = socket.hopLimit();
        socket.setHopLimit(hops);
        const connecting = socket.connect(peer, context.signal);
        socket.setHopLimit(normal);
        context.log.debug("primed", { to: formatAddress(peer), hops, round });
        await connecting;
        return socket;
      } catch (error) {
        socket.close();
        await this.#afterFailure(error, peer, round, context);
      }
    }
  }

  /** The initiator's loop: ordinary connects, each at most `connectMs`. */
  async #connectUntilConnected(
    local: InetAddress,
    peer: InetAddress,
    context: AttemptContext,
  ): Promise<Socket> {
    for (let round = 1;; round++) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      const slow = AbortSignal.timeout(this.#connectMs);
      try {
        socket.bind(local);
        await socket.connect(peer, AbortSignal.any([context.signal, slow]));
        return socket;
      } catch (error) {
        // A SYN_SENT socket closes without a packet.
        socket.close();
        if (!context.signal.aborted && slow.aborted) {
          context.noteError(
            `connect to ${formatAddress(peer)}: no answer in ${this.#connectMs} ms`,
          );
          if (round >= this.#maxConnects) {
            throw new TechniqueError(`no answer from ${formatAddress(peer)} to ${round} connects`, {
              cause: error,
            });
          }
          continue;
        }
        await this.#afterFailure(error, peer, round, context);
      }
    }
  }

  /** Rethrows what cannot be retried (or the last round's error); else waits `retryMs`. */
  async #afterFailure(
    error: unknown,
    peer: InetAddress,
    round: number,
    context: AttemptContext,
  ): Promise<void> {
    const code = errorCode(error);
    if (context.signal.aborted || !RETRYABLE_CONNECT_ERRORS.has(code)) throw error;
    context.noteError(`connect to ${formatAddress(peer)}: ${code}`);
    if (round >= this.#maxConnects) throw error;
    context.log.debug("connect failed; retrying", { to: formatAddress(peer), error: code, round });
    await delay(this.#retryMs, context.signal);
  }
}
