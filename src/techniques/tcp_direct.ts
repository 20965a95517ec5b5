/**
 * `tcp-direct`: a plain TCP connection to the peer's endpoint, from the
 * attempt's own port, while also accepting the peer's connection on that same
 * port. It works when the peers share a LAN or one side is reachable, and it
 * proves the whole daemon path (worker, fd passing) without raw sockets.
 *
 * Both roles:
 * - listen on SRC_IP:SRC_PORT (SO_REUSEADDR and SO_REUSEPORT, so the outgoing
 *   sockets can bind the same port);
 * - accept connections from DST_IP at any port (a peer behind a NAT with
 *   random mapping arrives from a port nobody could publish), never from
 *   another address.
 * The responder, every `retryMs`, connects from SRC_IP:SRC_PORT to each
 * DST_IP:DST_PORT (ECONNREFUSED while the peer is not listening yet just
 * retries). The initiator primes instead, when punchd's firewall is there:
 * it connects with a low TTL (`--nutss-ttl`, or found by hop discovery) and
 * restores the normal TTL at once, so its first SYN opens its own NAT for
 * the flow and dies before the peer's; a time-exceeded guard keeps the
 * socket connecting (Linux would abort it), and its kernel's retransmissions
 * (1 s, 3 s, ...) travel at full TTL for a peer only the initiator can reach.
 * Only then does it send its progress. The responder's SYN then finds the
 * initiator's NAT open and meets the connecting socket (simultaneous open).
 * A priming connect that fails (refused) is made again every `retryMs`.
 * Without punchd's firewall the initiator connects like the responder.
 *
 * Why: a NAT that answers unsolicited SYNs with RST also closes the peer
 * NAT's state of the flow with that RST. When both sides connected every
 * 200 ms, each SYN met the other NAT before its own flow was open (seen in a
 * capture: A's SYN, RST from B's NAT 30 µs later, B's SYN 46 ms later, RST
 * from A's NAT; every 200 ms until the deadline). A priming SYN that only
 * crossed the NAT is not enough without the guard: the ICMP time-exceeded
 * kills the socket, and the listener's SYN-ACK to the peer's SYN carries a
 * new ISN that the NAT's connection tracking finds out of window, so the NAT
 * lets it out untranslated.
 *
 * Every connection that forms, accepted or connected, must pass the
 * confirmation of tcp_confirm.ts (three 16-byte messages keyed by TOKEN)
 * before it counts: the first one that confirms wins, one that fails is
 * closed and the attempt goes on (accepting, connecting) until its
 * deadline. At most {@linkcode MAX_PENDING} confirmations of accepted
 * connections run at once; a new one beyond them closes the oldest, so a
 * flood from DST_IP can neither pile up sockets nor hold the slots until
 * the peer's connection comes (this side's own connects, one per DST_PORT,
 * always get their confirmation). Without it, a NATed side whose connect the public peer's
 * kernel accepted reported ok on a socket the peer's punchd had rejected,
 * and anyone at DST_IP who hit the port got the socket. When both sides
 * connect at the same moment the kernel forms one connection by
 * simultaneous open; a connect that finds the 4-tuple taken by an accepted
 * connection (EADDRNOTAVAIL) waits `retryMs` and tries again, while the
 * accepted one is confirmed.
 *
 * Wire: the initiator's progress data is `direct2:TOKEN` (TOKEN: 32 hex
 * digits, random per attempt); a responder requires it as EXTRA. Nothing
 * else crosses the rendezvous path.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import {
  formatAddress,
  type InetAddress,
  inetAddress,
  type SocketAddress,
} from "../../ffi/structs.ts";
import { addressBlock } from "../discovery/address_class.ts";
import { HopFinder } from "../discovery/hop_limit.ts";
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import { assertLowTtl, findLowTtl } from "./low_ttl.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";
import { flowOf } from "./tcp_flow_guard.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** The version tag that starts a `tcp-direct` initiator's progress data. */
export const TCP_DIRECT_TAG = "direct2";

/** Confirmations of accepted connections that may run at once. */
export const MAX_PENDING = 4;

/** The initiator's progress data: `direct2:TOKEN`. */
export function encodeDirectInfo(token: string): string {
  assertAttemptToken(token);
  return `${TCP_DIRECT_TAG}:${token}`;
}

/** Parses {@linkcode encodeDirectInfo}'s text to its token; throws SyntaxError. */
export function decodeDirectInfo(text: string): string {
  const token = text.startsWith(`${TCP_DIRECT_TAG}:`) ? text.slice(TCP_DIRECT_TAG.length + 1) : "";
  try {
    assertAttemptToken(token);
  } catch (error) {
    throw new SyntaxError(
      `tcp-direct expects EXTRA ${TCP_DIRECT_TAG}:TOKEN (the peer's punchd may be older)`,
      { cause: error },
    );
  }
  return token;
}

/** Tunables (injected in tests). */
export interface TcpDirectOptions {
  /** Milliseconds between connect rounds (default 200). */
  retryMs?: number;
  /** Milliseconds the peer's confirmation may take on one connection (default 5000). */
  confirmMs?: number;
  /** Finds the initiator's priming TTL when the attempt has none (default: a new finder). */
  hops?: HopFinder;
}

function fromPeerAddress(address: SocketAddress, spec: AttemptSpec): boolean {
  return address.family !== "unix" && address.address === spec.dstIp;
}

/**
 * Hands a connection that formed to the confirmation; resolves true when
 * it won the attempt, false when it was closed (confirmation failed, pushed
 * out by newer accepted ones, or another one won).
 */
type Candidate = (socket: Socket, from: string, accepted: boolean) => Promise<boolean>;

/** The `tcp-direct` technique. */
export class TcpDirect implements Technique {
  readonly name = "tcp-direct";
  readonly needsFirewall = false;
  readonly #retryMs: number;
  readonly #confirmMs: number;
  readonly #hops: HopFinder;

  /** Builds the technique with its tunables. */
  constructor(options: TcpDirectOptions = {}) {
    this.#retryMs = options.retryMs ?? 200;
    this.#confirmMs = options.confirmMs ?? 5000;
    this.#hops = options.hops ?? new HopFinder();
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) {
      throw new RangeError("tcp-direct takes exactly one source port");
    }
    if (spec.role === "respond") decodeDirectInfo(spec.extra ?? "");
    assertLowTtl(spec, this.name);
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const initiate = spec.role === "initiate";
    const token = initiate ? newAttemptToken() : decodeDirectInfo(spec.extra ?? "");
    // Winner selection: the first connection that confirms; everything else is closed.
    const done = new AbortController();
    const signal = AbortSignal.any([context.signal, done.signal]);
    const listener = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
    try {
      listener.bind(local);
      listener.listen(8);
      context.log.debug("listening", { local: formatAddress(local) });
      // `auto` towards a public peer: only the side behind NAT connects, from a port of the
      // kernel's, and the public side only listens; nothing of this step touches the 4-tuple
      // the punching steps after it use (a SYN with another ISN would stay in the NATs'
      // connection tracking and make theirs look out of window).
      const mode = spec.directMode ?? "both";
      const lowTtl = initiate && mode === "both"
        ? await this.#primingTtl(spec, peers, context)
        : null;
      const winner = await new Promise<Socket>((resolve, reject) => {
        let settled = false;
        // The confirmations of accepted connections under way, oldest first.
        const pending: AbortController[] = [];
        const lose = (error: unknown) => {
          if (settled) return;
          settled = true;
          reject(error);
        };
        const candidate: Candidate = async (socket, from, accepted) => {
          if (settled) {
            socket.close();
            return false;
          }
          const own = new AbortController();
          if (accepted) {
            if (pending.length >= MAX_PENDING) {
              pending.shift()?.abort(
                new TechniqueError(`more than ${MAX_PENDING} accepted connections confirming`),
              );
            }
            pending.push(own);
          }
          try {
            await confirmPeer(socket, {
              token,
              technique: this.name,
              role: initiate ? "initiator" : "responder",
              signal: AbortSignal.any([signal, own.signal]),
              timeoutMs: this.#confirmMs,
            });
          } catch (error) {
            socket.close();
            if (!signal.aborted) {
              context.noteError(`${from}: ${(error as Error).message}`);
              context.log.warn("connection failed confirmation; closed", {
                from,
                error: (error as Error).message,
              });
            }
            return false;
          } finally {
            const index = pending.indexOf(own);
            if (index >= 0) pending.splice(index, 1);
          }
          if (settled) {
            socket.close();
            return false;
          }
          settled = true;
          resolve(socket);
          return true;
        };
        this.#acceptLoop(listener, spec, candidate, signal, context).catch(lose);
        if (mode === "listen") {
          // The peer connects; this side only accepts (and confirms).
        } else if (mode === "ephemeral") {
          const from = inetAddress(spec.srcIp, 0);
          this.#connectLoop(from, peers, candidate, signal, context).catch(lose);
        } else if (lowTtl === null) {
          this.#connectLoop(local, peers, candidate, signal, context).catch(lose);
        } else {
          // Each loop's first SYN leaves before its first await: the progress follows them.
          for (const peer of peers) {
            this.#primeLoop(local, peer, lowTtl, candidate, signal, context).catch(lose);
          }
        }
        if (initiate) context.progress(encodeDirectInfo(token));
      });
      return winner;
    } catch (error) {
      if (context.signal.aborted) throw context.signal.reason;
      throw error;
    } finally {
      done.abort(new TechniqueError("attempt finished"));
      listener.close();
    }
  }

  /** Accepts until the attempt ends; each connection from DST_IP (any port) goes to confirmation. */
  async #acceptLoop(
    listener: Socket,
    spec: AttemptSpec,
    candidate: Candidate,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<never> {
    for (;;) {
      const { socket, address } = await listener.accept(signal);
      if (fromPeerAddress(address, spec)) {
        candidate(socket, `accepted from ${formatAddress(address)}`, true);
        continue;
      }
      context.log.warn("rejected connection from unexpected address", {
        from: formatAddress(address),
      });
      socket.close();
    }
  }

  /**
   * The initiator's priming TTL, once a time-exceeded guard is in for each
   * flow; null (connect at full TTL instead) toward a loopback address (no
   * NAT to open) or when the firewall refuses the guards.
   */
  async #primingTtl(
    spec: AttemptSpec,
    peers: InetAddress[],
    context: AttemptContext,
  ): Promise<number | null> {
    if (addressBlock(spec.dstIp)?.kind === "loopback") return null;
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    try {
      await Promise.all(
        peers.map((peer) =>
          context.firewall.add({ kind: "time-exceeded", flow: flowOf(local, peer) })
        ),
      );
    } catch (error) {
      context.log.debug("no time-exceeded guard; connecting without priming", {
        error: (error as Error).message,
      });
      return null;
    }
    return await findLowTtl(this.#hops, spec, context, "priming TTL");
  }

  /**
   * The initiator's connects to `peer`: each leaves with TTL `lowTtl` (the
   * normal TTL is restored right after connect() sent the SYN). A connect
   * that fails, or a connection that fails confirmation, is made again
   * after `retryMs`; so is one that finds the 4-tuple taken by an accepted
   * connection. Ends (never resolving) when it hands over a winner.
   */
  async #primeLoop(
    local: InetAddress,
    peer: InetAddress,
    lowTtl: number,
    candidate: Candidate,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    for (;;) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      let connected = false;
      try {
        socket.bind(local);
        const normalTtl = socket.hopLimit();
        socket.setHopLimit(lowTtl);
        const connecting = socket.connect(peer, signal);
        socket.setHopLimit(normalTtl);
        await connecting;
        connected = true;
      } catch (error) {
        socket.close();
        if (signal.aborted) throw signal.reason;
        const code = errorCode(error);
        if (code !== "EADDRNOTAVAIL" && code !== "EADDRINUSE") {
          if (!RETRYABLE_CONNECT_ERRORS.has(code)) {
            throw new TechniqueError(`Cannot connect: ${(error as Error).message}`, {
              cause: error,
            });
          }
          context.noteError(`connect: ${code}`);
        }
        context.log.debug("priming connect failed; priming again", {
          to: formatAddress(peer),
          error: code,
        });
      }
      if (connected && await candidate(socket, `connected to ${formatAddress(peer)}`, false)) {
        return;
      }
      await delay(this.#retryMs, signal);
    }
  }

  /**
   * Connect rounds until one connection wins; a connection that fails
   * confirmation, or a round that connects nowhere, is followed by another
   * round after `retryMs`.
   */
  async #connectLoop(
    local: InetAddress,
    peers: InetAddress[],
    candidate: Candidate,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    let lastError = "";
    let rounds = 0;
    for (;;) {
      const round = peers.map(async (peer) => {
        const socket = Socket.create(local.family, "stream", {
          reuseAddress: true,
          reusePort: true,
        });
        try {
          socket.bind(local);
          await socket.connect(peer, signal);
        } catch (error) {
          socket.close();
          throw error;
        }
        return await candidate(socket, `connected to ${formatAddress(peer)}`, false);
      });
      const results = await Promise.allSettled(round);
      if (results.some((r) => r.status === "fulfilled" && r.value)) return;
      if (signal.aborted) throw signal.reason;
      for (const r of results) {
        if (r.status !== "rejected") continue;
        const code = errorCode(r.reason);
        // The peer's connection was accepted on our port: the accept loop has it.
        if (code === "EADDRNOTAVAIL" || code === "EADDRINUSE") continue;
        if (!RETRYABLE_CONNECT_ERRORS.has(code)) {
          throw new TechniqueError(`Cannot connect: ${(r.reason as Error).message}`, {
            cause: r.reason,
          });
        }
        lastError = code;
        context.noteError(`connect: ${code}`);
      }
      context.log.debug("connect round failed; retrying", { error: lastError });
      // A refusal right at the start is usually a peer that is not listening yet: the first
      // rounds follow quickly (25, 50, 100 ms), then every retryMs.
      await delay(Math.min(this.#retryMs, 25 * 2 ** rounds++), signal);
    }
  }
}
