/**
 * `tcp-nutss`: TCP hole punching by simultaneous open, the non-spoofing
 * approach of NUTSS (Guha, Takeda, Francis, SIGCOMM FDNA 2004, section
 * 4.2.2; DOI 10.1145/1016707.1016715).
 *
 * On the wire (A initiates from A:pA to B's public P_B:pB, for each of B's
 * predicted public ports pB; B answers from B:pB to A's public P_A:pA):
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
 *  ──────── confirmation (16 bytes) ──────►
 *  ◄────────────── confirmation (16 bytes) ─  (both write, then read: tcp_confirm.ts)
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
 * sequence). The confirmation makes that attempt fail on both sides
 * rather than hand over a dead socket; dropping it needs a guard on the
 * sequence number of inbound pure SYNs, which punchd's firewall lacks.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";
import { guardFlow, presetIsn, randomIsn } from "./tcp_flow_guard.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** The version tag that starts a `tcp-nutss` initiator's progress data. */
export const TCP_NUTSS_TAG = "nutss2";

/** The default TTL of the initiator's first SYN: crosses its own NAT, not the peer's. */
export const DEFAULT_LOW_TTL = 2;

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
  /** Milliseconds the peer's confirmation may take (default 3000). */
  confirmMs?: number;
}

/** The `tcp-nutss` technique. */
export class TcpNutss implements Technique {
  readonly name = "tcp-nutss";
  readonly needsFirewall = true;
  readonly #retryMs: number;
  readonly #confirmMs: number;

  /** Builds the technique with its tunables. */
  constructor(options: TcpNutssOptions = {}) {
    this.#retryMs = options.retryMs ?? 500;
    this.#confirmMs = options.confirmMs ?? 3000;
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("tcp-nutss takes exactly one source port");
    if (spec.role === "respond") decodeNutssInfo(spec.extra ?? "");
    const ttl = spec.lowTtl ?? DEFAULT_LOW_TTL;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255) {
      throw new RangeError("tcp-nutss low TTL must be 1-255");
    }
  }

  async run(spec: AttemptSpec, attempt: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const initiate = spec.role === "initiate";
    const token = initiate ? newAttemptToken() : decodeNutssInfo(spec.extra ?? "");
    // Once one port connects, the loops of the other ports stop too.
    const done = new AbortController();
    const context = { ...attempt, signal: AbortSignal.any([attempt.signal, done.signal]) };
    try {
      // One ISN per flow, chosen here, so that its guards are in before its first SYN.
      const isns = peers.map(() => randomIsn());
      await Promise.all(
        peers.map((peer, i) =>
          guardFlow(context, local, peer, isns[i] ?? 0, initiate ? ["time-exceeded"] : [])
        ),
      );
      const lowTtl = initiate ? spec.lowTtl ?? DEFAULT_LOW_TTL : undefined;
      const connects = peers.map((peer, i) =>
        this.#connectUntilDeadline(local, peer, isns[i] ?? 0, context, lowTtl)
      );
      if (initiate) context.progress(encodeNutssInfo(token));
      const socket = await this.#firstConnected(connects, context);
      try {
        await confirmPeer(socket, {
          token,
          technique: this.name,
          role: initiate ? "initiator" : "responder",
          signal: attempt.signal,
          timeoutMs: this.#confirmMs,
        });
      } catch (error) {
        socket.close();
        throw error;
      }
      return socket;
    } finally {
      done.abort(new TechniqueError("attempt finished"));
    }
  }

  /**
   * Connects from `local` to `peer` with ISN `isn`, again every `retryMs`
   * after an early failure (RST, ICMP), until the deadline. With `lowTtl`,
   * each connect's SYN leaves with that TTL and the normal one is restored
   * right after (connect() sends the SYN before it returns), so
   * retransmissions and the rest of the connection travel normally.
   */
  async #connectUntilDeadline(
    local: InetAddress,
    peer: InetAddress,
    isn: number,
    context: AttemptContext,
    lowTtl?: number,
  ): Promise<Socket> {
    for (;;) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      try {
        socket.bind(local);
        presetIsn(socket, isn);
        const normalTtl = socket.hopLimit();
        if (lowTtl !== undefined) socket.setHopLimit(lowTtl);
        const connecting = socket.connect(peer, context.signal);
        socket.setHopLimit(normalTtl);
        await connecting;
        return socket;
      } catch (error) {
        socket.close();
        if (context.signal.aborted || !RETRYABLE_CONNECT_ERRORS.has(errorCode(error))) throw error;
        context.noteError(`connect to ${formatAddress(peer)}: ${errorCode(error)}`);
        context.log.debug("connect failed; retrying", {
          to: formatAddress(peer),
          error: errorCode(error),
        });
        await delay(this.#retryMs, context.signal);
      }
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
