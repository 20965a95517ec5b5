/**
 * `tcp-nutss`: TCP hole punching by simultaneous open, the non-spoofing
 * approach of NUTSS (Guha, Takeda, Francis, SIGCOMM FDNA 2004, section
 * 4.2.2; DOI 10.1145/1016707.1016715).
 *
 * On the wire (A initiates from A:pA to B's public P_B:pB, for each of B's
 * predicted public ports pB; B answers from B:pB to A's public P_A:pA;
 * SEG(seq, ack)):
 *
 * ```
 *  A (initiator)                            B (responder)
 *  guards: drop ICMP time-exceeded quoting
 *    the flow, outgoing RSTs, inbound
 *    SYN-ACKs whose ack is not a+1
 *  connect(), ISN a, TTL low ──SYN(a)──X    (opens A's NAT, dies before B's)
 *  progress "nutss2:TOKEN" ───────────────► guards: drop outgoing RSTs, inbound
 *                                             SYN-ACKs whose ack is not b+1
 *  (A's NAT lets it in: A's flow) ◄─SYN(b)── connect(), ISN b (opens B's NAT)
 *  SYN_SENT + SYN: simultaneous open
 *  ──────────── SYN-ACK(a, b+1) ──────────► ESTABLISHED
 *  ESTABLISHED ◄────────── ACK(b+1, a+1) ──
 *  ─────────── "initiator" (16 bytes) ────►
 *  ◄────────── "responder" (16 bytes) ─────
 *  ─────────── "initiator-done" (16 bytes) ► (tcp_confirm.ts)
 *  ok                                       ok
 * ```
 *
 * - A's time-exceeded guard stops the ICMP error its low-TTL SYN provokes
 *   (Linux would abort the connecting socket with EHOSTUNREACH).
 * - Each side picks its ISN itself ({@linkcode presetIsn}), so its guards
 *   against forged segments are in place before its first SYN leaves
 *   (tcp_flow_guard.ts): a blind SYN-ACK with random numbers no longer
 *   reaches the connecting socket, and no RST of the flow leaves to clear
 *   the NATs' state.
 * - A forged SYN-ACK still reaches A's NAT, which holds the flow open while
 *   A waits, and can leave the NAT's record of the reply direction out of
 *   step: B's SYN then gets in, but A's SYN-ACK is no longer translated and
 *   A's socket stays half-open (SYN_RECV). After `stuckMs` so, A closes that
 *   socket without a packet, makes its NAT forget the flow (an RST with the
 *   low TTL) and connects again with a new ISN and syn-ack guard; B's next
 *   SYN retransmission then meets a fresh NAT entry.
 * - TOKEN (32 hex digits, random per attempt) keys the confirmations both
 *   sides exchange over the new connection before either reports it; a
 *   wrong or missing confirmation fails the attempt on both sides.
 *
 * B's connects that fail early (RST, ICMP) are retried every `retryMs`
 * until the attempt's deadline, with the same ISN (the guards stay valid).
 * A's SYN is retransmitted by its kernel at full TTL; behind a NAT of B's
 * that supports simultaneous open it can reach B first, in which case B
 * goes through the simultaneous open instead: the guards allow both.
 *
 * Both sides need one source port; ports are preserved by most home NATs,
 * so the application publishes the endpoint punchd's `endpoint` request
 * predicts, and each side passes the other's as DST_IP/DST_PORTS.
 *
 * Not covered: a blind pure SYN with a random sequence number reaching a
 * connecting socket (it starts a simultaneous open with the wrong peer
 * sequence), and forged segments at B's NAT. The confirmation makes such
 * an attempt fail on both sides rather than hand over a dead socket;
 * dropping a forged SYN needs a guard on the sequence number of inbound
 * pure SYNs, which punchd's firewall lacks.
 *
 * @module
 */

import { RawSender } from "../../ffi/packet_socket.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { DEFAULT_HOP_LIMIT, HopFinder } from "../discovery/hop_limit.ts";
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import { assertLowTtl, findLowTtl } from "./low_ttl.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";
import {
  attemptIsns,
  closeQuietly,
  FlowGuard,
  presetIsn,
  randomIsn,
  TCP_STATE,
  tcpState,
} from "./tcp_flow_guard.ts";
import type { AttemptContext, GuardPlan, Technique } from "./technique.ts";

/** The version tag that starts a `tcp-nutss` initiator's progress data. */
export const TCP_NUTSS_TAG = "nutss2";

/**
 * The TTL of the initiator's first SYN when hop discovery cannot tell:
 * crosses one NAT of its own, not the peer's.
 */
export const DEFAULT_LOW_TTL = DEFAULT_HOP_LIMIT;

/** The initiator's progress data: `nutss2:TOKEN`. */
export function encodeNutssInfo(token: string): string {
  assertAttemptToken(token);
  return `${TCP_NUTSS_TAG}:${token}`;
}

/** Parses {@linkcode encodeNutssInfo}'s text to its token; throws SyntaxError. */
export function decodeNutssInfo(text: string): string {
  const token = text.startsWith(`${TCP_NUTSS_TAG}:`) ? text.slice(TCP_NUTSS_TAG.length + 1) : "";
  try {
    assertAttemptToken(token);
  } catch (error) {
    throw new SyntaxError(`tcp-nutss expects EXTRA "${TCP_NUTSS_TAG}:TOKEN"`, { cause: error });
  }
  return token;
}

/** Tunables (injected in tests). */
export interface TcpNutssOptions {
  /** Milliseconds between connect retries after an early failure (default 500). */
  retryMs?: number;
  /**
   * Milliseconds the peer's confirmation may take (default: the attempt's own timeout, so the
   * attempt's deadline bounds it: under load the peer's punchd may reach the exchange seconds
   * after this side's socket connected, and 1,000 attempts at once lost a third of them to a
   * fixed 8 s).
   */
  confirmMs?: number;
  /**
   * Milliseconds the initiator's socket may stay half-open (SYN_RECV)
   * before it takes its NAT's state of the flow for corrupt, resets it and
   * connects afresh (default 1500).
   */
  stuckMs?: number;
  /**
   * Milliseconds of nothing but refused connects (ECONNREFUSED: the peer's
   * NAT answers with RST) on a flow before the flow gives up (default 3000);
   * at least `refusedCount` of them are needed too.
   */
  refusedMs?: number;
  /** Refused connects in a row before a flow gives up (default 4). */
  refusedCount?: number;
  /**
   * Finds the initiator's low TTL per destination when the attempt has none
   * (`--nutss-ttl auto`); its cache lives as long as the technique (default: a new finder).
   */
  hops?: HopFinder;
}

/** One flow of an attempt: where from, where to, its guards. */
interface FlowPlan {
  local: InetAddress;
  peer: InetAddress;
  /** The ISN of the flow's first SYN (its guard lets in SYN-ACKs of `isn + 1`). */
  isn: number;
  guard: FlowGuard;
  /** The initiator's: the TTL of its SYNs and a raw socket to reset its NAT's state. */
  initiator?: { lowTtl: number; raw: RawSender };
}

/** Milliseconds between two looks at a connecting socket's state. */
const POLL_MS = 100;

/** The `tcp-nutss` technique. */
export class TcpNutss implements Technique {
  readonly name = "tcp-nutss";
  readonly needsFirewall = true;
  readonly #retryMs: number;
  readonly #confirmMs: number | undefined;
  readonly #stuckMs: number;
  readonly #refusedMs: number;
  readonly #refusedCount: number;
  readonly #hops: HopFinder;

  /** Builds the technique with its tunables. */
  constructor(options: TcpNutssOptions = {}) {
    this.#retryMs = options.retryMs ?? 500;
    this.#confirmMs = options.confirmMs;
    this.#stuckMs = options.stuckMs ?? 1500;
    this.#refusedMs = options.refusedMs ?? 3000;
    this.#refusedCount = options.refusedCount ?? 4;
    this.#hops = options.hops ?? new HopFinder();
  }

  guardPlan(spec: AttemptSpec): GuardPlan {
    return { extra: spec.role === "initiate" ? ["time-exceeded"] : [] };
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("tcp-nutss takes exactly one source port");
    if (spec.role === "respond") decodeNutssInfo(spec.extra ?? "");
    assertLowTtl(spec, this.name);
  }

  async run(spec: AttemptSpec, attempt: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const initiate = spec.role === "initiate";
    const token = initiate ? newAttemptToken() : decodeNutssInfo(spec.extra ?? "");
    // Once one port connects, the loops of the other ports stop too.
    const done = new AbortController();
    const context = { ...attempt, signal: AbortSignal.any([attempt.signal, done.signal]) };
    let raw: RawSender | undefined;
    try {
      // One ISN per flow, chosen before its guards (by the daemon, see guardPlan), so that they
      // are in before its first SYN.
      const isns = attemptIsns(spec, peers.length);
      // The initiator's low TTL is found while the guards go in.
      const [guards, lowTtl] = await Promise.all([
        Promise.all(
          peers.map((peer, i) =>
            FlowGuard.install(context, local, peer, isns[i] ?? 0, initiate ? ["time-exceeded"] : [])
          ),
        ),
        initiate
          ? findLowTtl(this.#hops, spec, context, "low TTL of the first SYN")
          : Promise.resolve(DEFAULT_LOW_TTL),
      ]);
      if (initiate) raw = RawSender.open(local.family);
      // Each loop sends its first SYN before its first await: the progress follows them.
      const connects = peers.map((peer, i) =>
        this.#connectUntilDeadline({
          local,
          peer,
          isn: isns[i] ?? 0,
          guard: guards[i] as FlowGuard,
          ...(raw !== undefined ? { initiator: { lowTtl, raw } } : {}),
        }, context)
      );
      if (initiate) context.progress(encodeNutssInfo(token));
      const socket = await this.#firstConnected(connects, context);
      try {
        await confirmPeer(socket, {
          token,
          technique: this.name,
          role: initiate ? "initiator" : "responder",
          signal: attempt.signal,
          timeoutMs: this.#confirmMs ?? spec.timeoutMs,
        });
      } catch (error) {
        socket.close();
        throw error;
      }
      return socket;
    } finally {
      done.abort(new TechniqueError("attempt finished"));
      raw?.close();
    }
  }

  /**
   * Connects along `flow` until the deadline. Connects that fail early
   * (RST, ICMP) are tried again every `retryMs`. The initiator's SYN leaves
   * with its low TTL and the normal one is restored right after (connect()
   * sends the SYN before it returns), so retransmissions and the rest of
   * the connection travel normally; when its socket stays half-open for
   * `stuckMs`, it resets its NAT's state of the flow and connects afresh
   * with a new ISN (see tcp_flow_guard.ts).
   */
  async #connectUntilDeadline(flow: FlowPlan, context: AttemptContext): Promise<Socket> {
    const { local, peer, guard, initiator } = flow;
    let isn = flow.isn;
    // A run of refused connects: when it lasts, the peer's NAT has no mapping for this flow.
    let refused = 0;
    let refusedSince = 0;
    for (;;) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      try {
        socket.bind(local);
        presetIsn(socket, isn);
        const normalTtl = socket.hopLimit();
        if (initiator !== undefined) socket.setHopLimit(initiator.lowTtl);
        const connecting = socket.connect(peer, context.signal);
        socket.setHopLimit(normalTtl);
        if (initiator === undefined) {
          await connecting;
          return socket;
        }
        if (await this.#connectedUnlessStuck(socket, connecting, context.signal)) return socket;
        context.noteError(`handshake with ${formatAddress(peer)} stuck half-open`);
        context.log.info("handshake stuck half-open; resetting the NAT's state of the flow", {
          to: formatAddress(peer),
        });
        refused = 0;
        closeQuietly(socket);
        await guard.resetNat(initiator.raw, isn + 1, initiator.lowTtl, context.signal);
        isn = randomIsn();
        await guard.acceptIsn(isn);
      } catch (error) {
        socket.close();
        if (context.signal.aborted || !RETRYABLE_CONNECT_ERRORS.has(errorCode(error))) throw error;
        if (errorCode(error) === "ECONNREFUSED") {
          if (refused++ === 0) refusedSince = performance.now();
          const ms = performance.now() - refusedSince;
          if (refused >= this.#refusedCount && ms >= this.#refusedMs) {
            throw new TechniqueError(
              `${formatAddress(peer)} refused ${refused} connects in ${
                (ms / 1000).toFixed(1)
              } s (its NAT has no mapping for this flow: port not preserved, or the peer is not punching)`,
            );
          }
        } else {
          refused = 0;
        }
        context.noteError(`connect to ${formatAddress(peer)}: ${errorCode(error)}`);
        context.log.debug("connect failed; retrying", {
          to: formatAddress(peer),
          error: errorCode(error),
        });
        await delay(this.#retryMs, context.signal);
      }
    }
  }

  /**
   * True once `connecting` completes; false when the socket has been
   * half-open (SYN_RECV: the peer's SYN came in, the handshake never
   * finished) for `stuckMs`. Rejects as `connecting` does.
   */
  async #connectedUnlessStuck(
    socket: Socket,
    connecting: Promise<void>,
    signal: AbortSignal,
  ): Promise<boolean> {
    const stop = new AbortController();
    const wait = AbortSignal.any([signal, stop.signal]);
    const stuck = (async () => {
      let since: number | undefined;
      for (;;) {
        await delay(POLL_MS, wait);
        if (tcpState(socket) !== TCP_STATE.SYN_RECV) {
          since = undefined;
          continue;
        }
        since ??= performance.now();
        if (performance.now() - since >= this.#stuckMs) return false;
      }
    })();
    try {
      return await Promise.race([connecting.then(() => true), stuck]);
    } finally {
      stop.abort();
      stuck.catch(() => {});
    }
  }

  /** The first connection that forms; the others are cancelled and closed. */
  async #firstConnected(connects: Promise<Socket>[], context: AttemptContext): Promise<Socket> {
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
      throw new TechniqueError(`tcp-nutss failed: ${[...new Set(reasons)].join("; ")}`, {
        cause: error,
      });
    }
  }
}
