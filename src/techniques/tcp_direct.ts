/**
 * `tcp-direct`: a plain TCP connection to the peer's endpoint, from the
 * attempt's own port, while also accepting the peer's connection on that same
 * port. It works when the peers share a LAN or one side is reachable, and it
 * proves the whole daemon path (worker, fd passing) without raw sockets.
 *
 * Both roles do the same thing:
 * - listen on SRC_IP:SRC_PORT (SO_REUSEADDR and SO_REUSEPORT, so the outgoing
 *   sockets can bind the same port);
 * - every `retryMs`, connect from SRC_IP:SRC_PORT to each DST_IP:DST_PORT
 *   (ECONNREFUSED while the peer is not listening yet just retries);
 * - accept connections, keeping only one from DST_IP and one of DST_PORTS.
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
import { TechniqueError } from "../errors.ts";
import { delay, errorCode, RETRYABLE_CONNECT_ERRORS } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** The progress data a `tcp-direct` initiator sends and a responder expects. */
export const TCP_DIRECT_TAG = "direct1";

/** Tunables (injected in tests). */
export interface TcpDirectOptions {
  /** Milliseconds between connect rounds (default 200). */
  retryMs?: number;
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

  /** Builds the technique with its tunables. */
  constructor(options: TcpDirectOptions = {}) {
    this.#retryMs = options.retryMs ?? 200;
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) {
      throw new RangeError("tcp-direct takes exactly one source port");
    }
    if (spec.role === "respond" && spec.extra !== TCP_DIRECT_TAG) {
      throw new SyntaxError(`tcp-direct expects EXTRA "${TCP_DIRECT_TAG}"`);
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
      if (spec.role === "initiate") context.progress(TCP_DIRECT_TAG);
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
        this.#connectLoop(local, peers, signal, context).then((s) => s && win(s), lose);
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
