/**
 * `tcp-nutss`: TCP hole punching by simultaneous open, the non-spoofing
 * approach of NUTSS (Guha, Takeda, Francis, SIGCOMM FDNA 2004, section
 * 4.2.2; DOI 10.1145/1016707.1016715).
 *
 * Initiator (A), for each of the peer's predicted public ports P:
 * 1. adds a firewall rule dropping ICMP time-exceeded errors that quote
 *    exactly the flow A:SRC_PORT -> DST_IP:P (without it, Linux aborts the
 *    connecting socket with EHOSTUNREACH);
 * 2. binds SRC_IP:SRC_PORT and connects with a low TTL (default 2): the SYN
 *    crosses A's own NAT, which opens a mapping and a filter entry for the
 *    flow, and dies before the peer's NAT;
 * 3. restores the normal TTL at once (retransmissions travel normally) and
 *    sends the progress data `nutss1`.
 *
 * Responder (B), once it has `nutss1`: binds SRC_IP:SRC_PORT and connects
 * normally to each of A's public ports. B's SYN opens B's NAT and matches
 * the entry A's SYN left in A's NAT, so it reaches A's connecting socket;
 * both kernels complete the handshake by simultaneous open (SYN, SYN-ACK
 * both ways). Connect attempts that fail early (RST, ICMP) are retried every
 * `retryMs` until the attempt's deadline.
 *
 * Both sides need one source port; ports are preserved by most home NATs,
 * so the application publishes the endpoint punchd's `endpoint` request
 * predicts, and each side passes the other's as DST_IP/DST_PORTS.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** The progress data a `tcp-nutss` initiator sends and a responder expects. */
export const TCP_NUTSS_TAG = "nutss1";

/** The default TTL of the initiator's first SYN: crosses its own NAT, not the peer's. */
export const DEFAULT_LOW_TTL = 2;

/** Tunables (injected in tests). */
export interface TcpNutssOptions {
  /** Milliseconds between connect retries after an early failure (default 500). */
  retryMs?: number;
}

/**
 * Adds the rule that drops the ICMP time-exceeded errors a low-TTL SYN of
 * the flow `local` -> `peer` provokes (Linux would abort the connecting
 * socket with EHOSTUNREACH). The daemon removes the guard when the attempt ends.
 */
export async function dropTimeExceeded(
  context: AttemptContext,
  local: InetAddress,
  peer: InetAddress,
): Promise<void> {
  await context.firewall.add({
    kind: "time-exceeded",
    flow: {
      localIp: local.address,
      localPort: local.port,
      remoteIp: peer.address,
      remotePort: peer.port,
    },
  });
}

/** The `tcp-nutss` technique. */
export class TcpNutss implements Technique {
  readonly name = "tcp-nutss";
  readonly needsFirewall = true;
  readonly #retryMs: number;

  /** Builds the technique with its tunables. */
  constructor(options: TcpNutssOptions = {}) {
    this.#retryMs = options.retryMs ?? 500;
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("tcp-nutss takes exactly one source port");
    if (spec.role === "respond" && spec.extra !== TCP_NUTSS_TAG) {
      throw new SyntaxError(`tcp-nutss expects EXTRA "${TCP_NUTSS_TAG}"`);
    }
    const ttl = spec.lowTtl ?? DEFAULT_LOW_TTL;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255) {
      throw new RangeError("tcp-nutss low TTL must be 1-255");
    }
  }

  async run(spec: AttemptSpec, attempt: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    // Once one port connects, the loops of the other ports stop too.
    const done = new AbortController();
    const context = { ...attempt, signal: AbortSignal.any([attempt.signal, done.signal]) };
    try {
      return spec.role === "initiate"
        ? await this.#initiate(local, peers, spec.lowTtl ?? DEFAULT_LOW_TTL, context)
        : await this.#firstConnected(
          peers.map((peer) => this.#connectUntilDeadline(local, peer, context)),
          context,
        );
    } finally {
      done.abort(new TechniqueError("attempt finished"));
    }
  }

  async #initiate(
    local: InetAddress,
    peers: InetAddress[],
    lowTtl: number,
    context: AttemptContext,
  ): Promise<Socket> {
    for (const peer of peers) await dropTimeExceeded(context, local, peer);
    const connects = peers.map((peer) => this.#connectUntilDeadline(local, peer, context, lowTtl));
    context.progress(TCP_NUTSS_TAG);
    return await this.#firstConnected(connects, context);
  }

  /**
   * Connects from `local` to `peer`, again every `retryMs` after an early
   * failure (RST, ICMP), until the deadline. With `lowTtl`, each connect's
   * SYN leaves with that TTL and the normal one is restored right after
   * (connect() sends the SYN before it returns), so retransmissions and the
   * rest of the connection travel normally.
   */
  async #connectUntilDeadline(
    local: InetAddress,
    peer: InetAddress,
    context: AttemptContext,
    lowTtl?: number,
  ): Promise<Socket> {
    for (;;) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      try {
        socket.bind(local);
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
