/**
 * `tcp-direct`: a plain TCP connection to the peer's endpoint, from the
 * attempt's own port, while also accepting the peer's connection on that same
 * port. It works when the peers share a LAN or one side is reachable, and it
 * proves the whole daemon path (worker, fd passing) without raw sockets.
 *
 * Both roles:
 * - listen on SRC_IP:SRC_PORT (SO_REUSEADDR and SO_REUSEPORT, so the outgoing
 *   sockets can bind the same port);
 * - accept connections, keeping only one from DST_IP and one of DST_PORTS.
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
 * The first established connection wins; when both sides connect at the same
 * moment the kernel forms one connection by simultaneous open, and a connect
 * that finds the 4-tuple already taken by an accepted connection
 * (EADDRNOTAVAIL) leaves the accept path to win.
 *
 * Wire: the initiator's progress data is `direct1` (a version tag); a
 * responder requires it as EXTRA. Nothing else crosses the rendezvous path.
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
import { flowOf } from "./tcp_flow_guard.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** The progress data a `tcp-direct` initiator sends and a responder expects. */
export const TCP_DIRECT_TAG = "direct1";

/** Tunables (injected in tests). */
export interface TcpDirectOptions {
  /** Milliseconds between connect rounds (default 200). */
  retryMs?: number;
  /** Finds the initiator's priming TTL when the attempt has none (default: a new finder). */
  hops?: HopFinder;
}

function isExpectedPeer(address: SocketAddress, spec: AttemptSpec): boolean {
  return address.family !== "unix" && address.address === spec.dstIp &&
    spec.dstPorts.includes(address.port);
}

/** The `tcp-direct` technique. */
export class TcpDirect implements Technique {
  readonly name = "tcp-direct";
  readonly needsFirewall = false;
  readonly #retryMs: number;
  readonly #hops: HopFinder;

  /** Builds the technique with its tunables. */
  constructor(options: TcpDirectOptions = {}) {
    this.#retryMs = options.retryMs ?? 200;
    this.#hops = options.hops ?? new HopFinder();
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) {
      throw new RangeError("tcp-direct takes exactly one source port");
    }
    if (spec.role === "respond" && spec.extra !== TCP_DIRECT_TAG) {
      throw new SyntaxError(`tcp-direct expects EXTRA "${TCP_DIRECT_TAG}"`);
    }
    const ttl = spec.lowTtl;
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1 || ttl > 255)) {
      throw new RangeError("tcp-direct low TTL must be 1-255");
    }
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    // Winner selection: the first connection that completes; everything else is closed.
    const done = new AbortController();
    const signal = AbortSignal.any([context.signal, done.signal]);
    const listener = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
    try {
      listener.bind(local);
      listener.listen(8);
      context.log.debug("listening", { local: formatAddress(local) });
      const lowTtl = spec.role === "initiate" ? await this.#primingTtl(spec, peers, context) : null;
      const winner = await new Promise<Socket>((resolve, reject) => {
        let settled = false;
        const win = (socket: Socket) => {
          if (settled) return socket.close();
          settled = true;
          resolve(socket);
        };
        const lose = (error: unknown) => {
          if (settled) return;
          settled = true;
          reject(error);
        };
        this.#acceptLoop(listener, spec, signal, context).then(win, lose);
        if (lowTtl === null) {
          this.#connectLoop(local, peers, signal, context).then((s) => s && win(s), lose);
        } else {
          // Each loop's first SYN leaves before its first await: the progress follows them.
          for (const peer of peers) {
            this.#primeLoop(local, peer, lowTtl, signal, context).then((s) => s && win(s), lose);
          }
        }
        if (spec.role === "initiate") context.progress(TCP_DIRECT_TAG);
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

  async #acceptLoop(
    listener: Socket,
    spec: AttemptSpec,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<Socket> {
    for (;;) {
      const { socket, address } = await listener.accept(signal);
      if (isExpectedPeer(address, spec)) return socket;
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
    const choice = await this.#hops.hopLimit(
      spec.lowTtl,
      { source: spec.srcIp, destination: spec.dstIp },
      context.signal,
    );
    context.log.debug("priming TTL", {
      ttl: choice.hopLimit,
      how: choice.how,
      reason: choice.reason,
    });
    return choice.hopLimit;
  }

  /**
   * The initiator's connects to `peer`: each leaves with TTL `lowTtl` (the
   * normal TTL is restored right after connect() sent the SYN), and one that
   * fails is made again after `retryMs`. Resolves null when accept won the
   * 4-tuple.
   */
  async #primeLoop(
    local: InetAddress,
    peer: InetAddress,
    lowTtl: number,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<Socket | null> {
    for (;;) {
      const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
      try {
        socket.bind(local);
        const normalTtl = socket.hopLimit();
        socket.setHopLimit(lowTtl);
        const connecting = socket.connect(peer, signal);
        socket.setHopLimit(normalTtl);
        await connecting;
        return socket;
      } catch (error) {
        socket.close();
        if (signal.aborted) throw signal.reason;
        const code = errorCode(error);
        if (code === "EADDRNOTAVAIL" || code === "EADDRINUSE") return new Promise<never>(() => {});
        if (!RETRYABLE_CONNECT_ERRORS.has(code)) {
          throw new TechniqueError(`Cannot connect: ${(error as Error).message}`, { cause: error });
        }
        context.noteError(`connect: ${code}`);
        context.log.debug("priming connect failed; priming again", {
          to: formatAddress(peer),
          error: code,
        });
        await delay(this.#retryMs, signal);
      }
    }
  }

  /** Connect rounds until one connects; resolves null when accept won the 4-tuple. */
  async #connectLoop(
    local: InetAddress,
    peers: InetAddress[],
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<Socket | null> {
    let lastError = "";
    for (;;) {
      const round = peers.map(async (peer) => {
        const socket = Socket.create(local.family, "stream", {
          reuseAddress: true,
          reusePort: true,
        });
        try {
          socket.bind(local);
          await socket.connect(peer, signal);
          return socket;
        } catch (error) {
          socket.close();
          throw error;
        }
      });
      const results = await Promise.allSettled(round);
      const connected = results.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
      if (connected.length > 0) {
        for (const extra of connected.slice(1)) extra.close();
        return connected[0] ?? null;
      }
      if (signal.aborted) throw signal.reason;
      for (const r of results) {
        if (r.status !== "rejected") continue;
        const code = errorCode(r.reason);
        // The peer's connection was accepted on our port: the accept loop has it.
        if (code === "EADDRNOTAVAIL" || code === "EADDRINUSE") return new Promise<never>(() => {});
        if (!RETRYABLE_CONNECT_ERRORS.has(code)) {
          throw new TechniqueError(`Cannot connect: ${(r.reason as Error).message}`, {
            cause: r.reason,
          });
        }
        lastError = code;
        context.noteError(`connect: ${code}`);
      }
      context.log.debug("connect round failed; retrying", { error: lastError });
      await delay(this.#retryMs, signal);
    }
  }
}
