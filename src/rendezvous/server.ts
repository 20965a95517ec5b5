/**
 * The rendezvous and probe server: peers stay connected over TCP, register
 * an ID, publish their endpoints, query others' and send them notifications
 * (opaque payloads such as punchd's progress data) that the server forwards.
 * It also tells any client the public endpoint it sees (what STUN does), on
 * its main port and on extra probe ports, over TCP and UDP.
 *
 * Limits (see {@linkcode RendezvousOptions} for the defaults): lines of 1024
 * bytes; registered peers, connections and UDP names at once, and per source
 * address (IPv4, or IPv6 /64); a connection must register within
 * `registerTimeoutMs`; notifications per second per sender; and bytes queued
 * for one connection. A connection whose queue is full is not read until it
 * drains (so a peer that pipelines without reading slows only itself), and is
 * closed when it reads nothing for `stuckTimeoutMs`. Every connection is read
 * once per turn of the reactor, so one busy peer cannot starve the others.
 *
 * A registered ID belongs to its connection until it disconnects; with a
 * credential (see `credentials.ts`) it belongs to whoever holds the
 * credential, who may also take it over from a stale connection.
 *
 * @module
 */

import { SyscallError } from "../../ffi/errno.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, type SocketAddress } from "../../ffi/structs.ts";
import * as sys from "../../ffi/syscalls.ts";
import { LineSplitter } from "../control/connection.ts";
import type { Logger } from "../log.ts";
import {
  decodeRendezvousRequest,
  MAX_LINE,
  observedLine,
  RendezvousError,
  type RendezvousRequest,
} from "./codec.ts";
import { PeerConnection } from "./connection.ts";
import { type AuthMode, CredentialPolicy } from "./credentials.ts";
import { AddressCounter, addressKey, type Clock, sleep, TokenBucket } from "./limits.ts";
import { UdpNames } from "./udp_names.ts";
import { UdpService } from "./udp_server.ts";
import { stunAnswer } from "./stun_answer.ts";
import { frameLength } from "../stun/message.ts";

/** How registrations are authenticated (see `credentials.ts`). */
export type RendezvousAuth =
  | { mode: "open"; bindingTtlMs?: number }
  | { mode: "secret"; secret: Uint8Array };

/** Options of the server. */
export interface RendezvousOptions {
  /** The main TCP/UDP endpoint. Port 0 picks one. */
  listen: InetAddress;
  /** Extra probe ports on the same address (TCP and UDP). */
  probePorts?: number[];
  /** Registered peers at once, and UDP registrations at once (default 1000 each). */
  maxPeers?: number;
  /** Milliseconds a UDP registration lives without a keepalive (default 60000). */
  udpExpiryMs?: number;
  /** TCP connections at once on the main port (default 4096). */
  maxConnections?: number;
  /** TCP connections at once from one source address (default 32). */
  maxConnectionsPerAddress?: number;
  /** Registered IDs at once from one source address (default 16). */
  maxIdsPerAddress?: number;
  /** UDP names at once from one source address (default 16). */
  maxUdpNamesPerAddress?: number;
  /** UDP `connect`s per second to one name, sustained (default 20; the burst is twice that). */
  udpConnectRate?: number;
  /** Milliseconds a connection may stay unregistered before it is closed (default 10000). */
  registerTimeoutMs?: number;
  /** Notifications per second one connection may send, sustained (default 20). */
  notifyRate?: number;
  /** Notifications one connection may send in a burst (default 40). */
  notifyBurst?: number;
  /** Bytes queued for one connection at most (default 64 KiB). */
  maxQueuedBytes?: number;
  /** Milliseconds a connection with queued bytes may read nothing before it is closed (default 30000). */
  stuckTimeoutMs?: number;
  /** Registration authentication (default open: credentials optional, trust on first use). */
  auth?: RendezvousAuth;
  /** Milliseconds for expiries and rates (default `performance.now`). */
  clock?: Clock;
  log: Logger;
}

/** Refused notifications in a row after which a sender is disconnected. */
const MAX_REFUSED_NOTIFIES = 256;
/** How often expired UDP names and credential bindings are swept, in milliseconds. */
const SWEEP_INTERVAL_MS = 1000;
const encoder = new TextEncoder();
/** Milliseconds a probe-port TCP connection has to send its STUN request. */
const PROBE_TIMEOUT_MS = 10_000;
/** Probe-port TCP connections at once (more are closed at once). */
const MAX_PROBE_CONNECTIONS = 1024;

/** Writes what fits now into a socket's buffer, for a last word before closing. */
function sendNow(socket: Socket, line: string): void {
  try {
    if (socket.isOpen) sys.send(socket.fd, encoder.encode(line));
  } catch {
    // The peer is gone already; closing is all that is left.
  }
}

function isOutOfDescriptors(error: unknown): boolean {
  return error instanceof SyscallError &&
    ["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"].includes(error.code);
}

interface Peer extends PeerConnection {
  registerTimer?: ReturnType<typeof setTimeout>;
  notifyBucket?: TokenBucket;
  refusedNotifies?: number;
  holdsBinding?: boolean;
}

/** A running rendezvous server. */
export class RendezvousServer {
  readonly #options: RendezvousOptions;
  readonly #clock: Clock;
  readonly #listeners: Socket[] = [];
  readonly #udp: Socket[] = [];
  readonly #peers = new Set<Peer>();
  readonly #byId = new Map<string, Peer>();
  readonly #connections: AddressCounter;
  readonly #registrations: AddressCounter;
  readonly #udpNames: UdpNames;
  readonly #udpService: UdpService;
  readonly #policy: CredentialPolicy;
  readonly #tasks = new Set<Promise<void>>();
  /** Probe-port TCP connections open now. */
  #probes = 0;
  readonly #stopped = new AbortController();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** An fd held in reserve: closed to accept-and-close one connection when fds run out. */
  #spare: Socket | null = null;
  #address: InetAddress | null = null;
  /** One read buffer and decoder for every connection (each read is split at once). */
  readonly #readBuffer = new Uint8Array(4096);
  readonly #utf8 = new TextDecoder("utf-8", { fatal: true });

  private constructor(options: RendezvousOptions) {
    this.#options = options;
    this.#clock = options.clock ?? (() => performance.now());
    const maxPeers = options.maxPeers ?? 1000;
    this.#connections = new AddressCounter(options.maxConnectionsPerAddress ?? 32);
    this.#registrations = new AddressCounter(options.maxIdsPerAddress ?? 16);
    this.#udpNames = new UdpNames({
      maxNames: maxPeers,
      maxPerAddress: options.maxUdpNamesPerAddress ?? 16,
      expiryMs: options.udpExpiryMs ?? 60_000,
      connectRate: options.udpConnectRate ?? 20,
      connectBurst: (options.udpConnectRate ?? 20) * 2,
    });
    const auth = options.auth ?? { mode: "open" };
    this.#policy = new CredentialPolicy({
      mode: auth.mode,
      ...(auth.mode === "secret" ? { secret: auth.secret } : {}),
      bindingTtlMs: auth.mode === "open" ? auth.bindingTtlMs ?? 3_600_000 : 0,
      maxBindings: maxPeers * 4,
      maxBindingsPerAddress: (options.maxIdsPerAddress ?? 16) * 4,
    });
    this.#udpService = new UdpService({
      names: this.#udpNames,
      policy: this.#policy,
      clock: this.#clock,
      log: options.log,
    });
  }

  /** Binds every port and starts serving. */
  static start(options: RendezvousOptions): RendezvousServer {
    const server = new RendezvousServer(options);
    try {
      server.#open();
    } catch (error) {
      server.stop();
      throw error;
    }
    return server;
  }

  /** The main endpoint (with the port the kernel picked for port 0). */
  get address(): InetAddress {
    if (this.#address === null) {
      throw new Error("Cannot get the address: the server is not running");
    }
    return this.#address;
  }

  /** Registered peers now. */
  get peerCount(): number {
    return this.#byId.size;
  }

  /** Open TCP connections on the main port now. */
  get connectionCount(): number {
    return this.#peers.size;
  }

  /** UDP names held now (expired ones until the next sweep). */
  get udpNameCount(): number {
    return this.#udpNames.size;
  }

  /** The authentication mode. */
  get authMode(): AuthMode {
    return this.#policy.mode;
  }

  #open(): void {
    const { listen } = this.#options;
    this.#spare = Socket.create(listen.family, "datagram");
    const main = Socket.create(listen.family, "stream", { reuseAddress: true });
    this.#listeners.push(main);
    main.bind(listen);
    main.listen(512);
    const bound = main.localAddress() as InetAddress;
    this.#address = bound;
    this.#track(this.#acceptLoop(main, false));
    for (const port of [bound.port, ...(this.#options.probePorts ?? [])]) {
      if (port !== bound.port) {
        const probe = Socket.create(listen.family, "stream", { reuseAddress: true });
        this.#listeners.push(probe);
        probe.bind({ ...listen, port });
        probe.listen(512);
        this.#track(this.#acceptLoop(probe, true));
      }
      const udp = Socket.create(listen.family, "datagram", { reuseAddress: true });
      this.#udp.push(udp);
      udp.bind({ ...listen, port });
      this.#track(this.#udpService.serve(udp, port === bound.port, this.#stopped.signal));
    }
    this.#sweeper = setInterval(() => {
      const now = this.#clock();
      this.#udpNames.sweep(now);
      this.#policy.sweep(now);
    }, SWEEP_INTERVAL_MS);
    this.#options.log.info("rendezvous server listening", {
      address: formatAddress(bound),
      probePorts: (this.#options.probePorts ?? []).join(",") || "none",
      auth: this.#policy.mode,
    });
  }

  #track(task: Promise<void>): void {
    const tracked = task.catch((error) => {
      if (!this.#stopped.signal.aborted) {
        this.#options.log.error("server task failed", { error: (error as Error).message });
      }
    }).finally(() => this.#tasks.delete(tracked));
    this.#tasks.add(tracked);
  }

  /**
   * Out of fds: the pending connection would stay in the backlog and make
   * the listener readable forever. Give up the spare fd, accept that
   * connection and close it at once (its client learns now), take the
   * spare back.
   */
  #shed(listener: Socket): void {
    this.#spare?.close();
    this.#spare = null;
    try {
      const accepted = sys.accept(listener.fd);
      if (accepted !== null) sys.close(accepted.fd);
    } catch {
      // Still nothing to accept with; the backoff below waits for fds.
    }
    try {
      this.#spare = Socket.create(this.#options.listen.family, "datagram");
    } catch {
      // Taken again at the next shed.
    }
  }

  async #acceptLoop(listener: Socket, probeOnly: boolean): Promise<void> {
    const signal = this.#stopped.signal;
    let backoffMs = 0;
    while (!signal.aborted) {
      let accepted;
      try {
        accepted = await listener.accept(signal);
      } catch (error) {
        if (signal.aborted) return;
        if (isOutOfDescriptors(error)) {
          if (backoffMs === 0) {
            this.#options.log.warn("out of file descriptors: refusing connections", {
              error: (error as Error).message,
              connections: this.#peers.size,
            });
          }
          this.#shed(listener);
          backoffMs = Math.min(Math.max(backoffMs * 2, 10), 1000);
        } else {
          this.#options.log.warn("accept failed", { error: (error as Error).message });
          backoffMs = 100;
        }
        await sleep(backoffMs, signal);
        continue;
      }
      if (backoffMs > 0) this.#options.log.info("accepting connections again");
      backoffMs = 0;
      const { socket, address } = accepted;
      if (probeOnly) {
        this.#probe(socket, address);
        continue;
      }
      this.#admit(socket, address);
    }
  }

  /**
   * A probe port's TCP connection: one STUN Binding request (RFC 8489 stream framing) within
   * {@linkcode PROBE_TIMEOUT_MS}, answered, then closed by this side (its TIME_WAIT stays here,
   * not on the client's port). Anything that is not STUN, or too slow, is closed unanswered.
   * At most {@linkcode MAX_PROBE_CONNECTIONS} at once.
   */
  #probe(socket: Socket, address: SocketAddress): void {
    if (this.#probes >= MAX_PROBE_CONNECTIONS || address.family === "unix") {
      socket.close();
      return;
    }
    this.#probes++;
    const task = (async () => {
      try {
        const signal = AbortSignal.any([
          this.#stopped.signal,
          AbortSignal.timeout(PROBE_TIMEOUT_MS),
        ]);
        const buf = new Uint8Array(512);
        let length = 0;
        for (;;) {
          const total = frameLength(buf.subarray(0, length));
          if (total !== null && total > buf.length) return;
          if (total !== null && length >= total) {
            const local = socket.localAddress();
            if (local.family === "unix") return;
            const answer = stunAnswer(buf.subarray(0, total), address, local);
            if (answer !== null) await socket.write(new Uint8Array(answer), signal);
            return;
          }
          const n = await socket.read(buf.subarray(length), signal);
          if (n === 0) return;
          length += n;
        }
      } catch {
        // Not STUN, too slow, or gone: closing is the answer.
      } finally {
        socket.close();
        this.#probes--;
      }
    })();
    this.#tasks.add(task);
    void task.finally(() => this.#tasks.delete(task));
  }

  #admit(socket: Socket, address: SocketAddress): void {
    const key = addressKey(address);
    if (this.#peers.size >= (this.#options.maxConnections ?? 4096)) {
      sendNow(socket, "error|-|too many connections\n");
      socket.close();
      return;
    }
    if (!this.#connections.acquire(key)) {
      sendNow(socket, "error|-|too many connections from your address\n");
      socket.close();
      return;
    }
    const peer: Peer = new PeerConnection(socket, address, {
      maxQueuedBytes: this.#options.maxQueuedBytes ?? 64 * 1024,
      stuckTimeoutMs: this.#options.stuckTimeoutMs ?? 30_000,
    });
    const registerMs = this.#options.registerTimeoutMs ?? 10_000;
    peer.registerTimer = setTimeout(() => {
      peer.finish(`error|-|not registered within ${registerMs / 1000} s\n`);
    }, registerMs);
    this.#peers.add(peer);
    this.#track(this.#serve(peer));
  }

  async #serve(peer: Peer): Promise<void> {
    const splitter = new LineSplitter(MAX_LINE);
    const buf = this.#readBuffer;
    const signal = peer.closed.signal;
    // After finish(), the last reply goes out and the writer closes the connection.
    const closed = () =>
      new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener("abort", () => resolve(), { once: true });
      });
    try {
      for (;;) {
        // Backpressure: a peer whose replies pile up is not read until they drain.
        if (peer.isFull) await peer.drained();
        // One read per reactor turn: every ready connection gets its turn.
        await peer.socket.readable(signal);
        if (peer.finishing) return await closed();
        // The read buffer is shared by every connection: read and split (which copies
        // the lines out) without an await in between.
        const n = sys.recv(peer.socket.fd, buf);
        if (n === null) continue;
        if (n === 0) return;
        for (const line of splitter.push(buf.subarray(0, n))) {
          if (peer.isFull) await peer.drained();
          if (peer.finishing) return await closed();
          if (line.kind === "too-long") {
            peer.reply(`error|-|line longer than ${MAX_LINE} bytes\n`);
            continue;
          }
          let text: string;
          try {
            text = this.#utf8.decode(line.bytes);
          } catch {
            peer.reply("error|-|line is not valid UTF-8\n");
            continue;
          }
          try {
            this.#handle(peer, decodeRendezvousRequest(text));
          } catch (error) {
            const command = error instanceof RendezvousError ? error.command : "-";
            peer.reply(`error|${command}|${(error as Error).message.replace(/[|\n\r]/g, " ")}\n`);
          }
        }
      }
    } catch (error) {
      if (!signal.aborted) {
        this.#options.log.debug("peer connection failed", { error: (error as Error).message });
      }
    } finally {
      this.#drop(peer);
    }
  }

  #register(peer: Peer, id: string, credential: string | undefined): void {
    if (peer.id === id) return peer.reply(`ok|register|${id}\n`);
    if (peer.id !== null) {
      throw new RendezvousError("register", `this connection is registered as ${peer.id}`);
    }
    const now = this.#clock();
    const held = this.#byId.get(id);
    // A holder of the ID's credential may take the ID over from another connection.
    const mayTakeOver = credential !== undefined &&
      (this.#policy.mode === "secret" || this.#policy.isBound(id, now));
    if (held !== undefined && !mayTakeOver) {
      throw new RendezvousError("register", "peer ID is taken");
    }
    if (held === undefined && this.#byId.size >= (this.#options.maxPeers ?? 1000)) {
      throw new RendezvousError("register", "too many peers");
    }
    if (!this.#registrations.acquire(peer.key)) {
      throw new RendezvousError("register", "too many IDs from your address");
    }
    const refusal = this.#policy.admit(id, credential, peer.key, now);
    if (refusal !== null) {
      this.#registrations.release(peer.key);
      this.#options.log.info("registration refused", {
        peer: id,
        from: formatAddress(peer.address),
        reason: refusal,
      });
      if (refusal === "wrong credential") {
        // One guess per connection.
        return peer.finish(`error|register|${refusal}\n`);
      }
      throw new RendezvousError("register", refusal);
    }
    if (held !== undefined) {
      this.#options.log.info("peer ID taken over by its credential", {
        peer: id,
        from: formatAddress(peer.address),
        was: formatAddress(held.address),
      });
      this.#byId.delete(id);
      held.finish(`error|register|${id} registered from another connection\n`);
    }
    clearTimeout(peer.registerTimer);
    peer.id = id;
    peer.holdsBinding = this.#policy.mode === "open" && credential !== undefined;
    this.#byId.set(id, peer);
    this.#options.log.info("peer registered", { peer: id, from: formatAddress(peer.address) });
    peer.reply(`ok|register|${id}\n`);
  }

  #notify(peer: Peer, targetId: string, payload: string): void {
    if (peer.id === null) throw new RendezvousError("notify", "register first");
    peer.notifyBucket ??= new TokenBucket(
      this.#options.notifyRate ?? 20,
      this.#options.notifyBurst ?? 40,
      this.#clock,
    );
    if (!peer.notifyBucket.take()) {
      peer.refusedNotifies = (peer.refusedNotifies ?? 0) + 1;
      if (peer.refusedNotifies >= MAX_REFUSED_NOTIFIES) {
        this.#options.log.info("notify flood: sender disconnected", { peer: peer.id });
        return peer.finish("error|notify|rate limit exceeded: disconnected\n");
      }
      throw new RendezvousError("notify", "rate limit exceeded");
    }
    peer.refusedNotifies = 0;
    const target = this.#byId.get(targetId);
    if (target === undefined) throw new RendezvousError("notify", "unknown peer");
    if (!target.offer(`notify|${peer.id}|${payload}\n`)) {
      throw new RendezvousError("notify", "peer is not reading; try again later");
    }
    peer.reply(`ok|notify|${targetId}\n`);
  }

  #handle(peer: Peer, request: RendezvousRequest): void {
    switch (request.type) {
      case "register":
        return this.#register(peer, request.peerId, request.credential);
      case "publish":
        if (peer.id === null) throw new RendezvousError("publish", "register first");
        peer.endpoints.set(request.protocol, { ip: request.ip, ports: request.ports });
        return peer.reply(`ok|publish|${request.protocol}\n`);
      case "query": {
        const target = this.#byId.get(request.peerId);
        if (target === undefined) throw new RendezvousError("query", "unknown peer");
        const endpoint = target.endpoints.get(request.protocol);
        if (endpoint === undefined) {
          throw new RendezvousError("query", `peer has published no ${request.protocol} endpoint`);
        }
        return peer.reply(
          `peer|${request.peerId}|${request.protocol}|${endpoint.ip}|${endpoint.ports.join(",")}\n`,
        );
      }
      case "notify":
        return this.#notify(peer, request.peerId, request.payload);
      case "observe":
        return peer.reply(observedLine(peer.address));
      case "ping":
        return peer.reply("pong\n");
    }
  }

  #drop(peer: Peer): void {
    peer.close();
    clearTimeout(peer.registerTimer);
    if (!this.#peers.delete(peer)) return;
    this.#connections.release(peer.key);
    if (peer.id !== null) {
      this.#registrations.release(peer.key);
      if (peer.holdsBinding) this.#policy.release(peer.id, this.#clock());
      if (this.#byId.get(peer.id) === peer) {
        this.#byId.delete(peer.id);
        this.#options.log.info("peer unregistered", { peer: peer.id });
      }
    }
  }

  /** Closes every socket; resolves when every task has ended. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    clearInterval(this.#sweeper);
    for (const socket of [...this.#listeners, ...this.#udp]) socket.close();
    this.#spare?.close();
    for (const peer of [...this.#peers]) this.#drop(peer);
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }
}
