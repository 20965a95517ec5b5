/**
 * The rendezvous and probe server: peers stay connected over TCP, register
 * an ID, publish their endpoints, query others' and send them notifications
 * (opaque payloads such as punchd's progress data) that the server forwards.
 * It also tells any client the public endpoint it sees (what STUN does), on
 * its main port and on extra probe ports, over TCP and UDP.
 *
 * Limits: lines of 1024 bytes, `maxPeers` registered peers, and 256 KiB of
 * replies queued for one connection (a peer that does not read is dropped).
 * A registered ID belongs to its connection until it disconnects: nobody
 * else can take it over.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, type SocketAddress } from "../../ffi/structs.ts";
import { LineSplitter } from "../control/connection.ts";
import type { Logger } from "../log.ts";
import {
  decodeRendezvousRequest,
  isPeerId,
  MAX_LINE,
  RendezvousError,
  type RendezvousRequest,
} from "./codec.ts";

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
  log: Logger;
}

const MAX_QUEUED_BYTES = 256 * 1024;
const encoder = new TextEncoder();

function endpointText(address: SocketAddress): string {
  return address.family === "unix" ? "-|-" : `${address.address}|${address.port}`;
}

function sameAddress(a: SocketAddress, b: SocketAddress): boolean {
  return a.family !== "unix" && b.family !== "unix" && a.address === b.address && a.port === b.port;
}

function observedLine(address: SocketAddress): string {
  if (address.family === "unix") throw new TypeError("Cannot observe a unix socket address");
  return `observed|${address.address}|${address.port}\n`;
}

class Peer {
  readonly socket: Socket;
  readonly address: SocketAddress;
  id: string | null = null;
  endpoints = new Map<string, { ip: string; ports: number[] }>();
  #queued = 0;
  #writes: Promise<void> = Promise.resolve();
  readonly closed = new AbortController();

  constructor(socket: Socket, address: SocketAddress) {
    this.socket = socket;
    this.address = address;
  }

  /** Queues a line; drops the peer when too much is queued. */
  send(line: string): void {
    if (this.closed.signal.aborted) return;
    const bytes = encoder.encode(line);
    this.#queued += bytes.length;
    if (this.#queued > MAX_QUEUED_BYTES) {
      this.close();
      return;
    }
    this.#writes = this.#writes
      .then(() => this.socket.write(bytes, this.closed.signal))
      .then(() => {
        this.#queued -= bytes.length;
      })
      .catch(() => this.close());
  }

  close(): void {
    if (this.closed.signal.aborted) return;
    this.closed.abort();
    this.socket.close();
  }
}

/** A running rendezvous server. */
export class RendezvousServer {
  readonly #options: RendezvousOptions;
  readonly #listeners: Socket[] = [];
  readonly #udp: Socket[] = [];
  readonly #peers = new Set<Peer>();
  readonly #byId = new Map<string, Peer>();
  /** UDP registrations: name (or session ID) to the endpoint it came from, until it expires. */
  readonly #udpNames = new Map<string, { endpoint: SocketAddress; expires: number }>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #stopped = new AbortController();
  #address: InetAddress | null = null;

  private constructor(options: RendezvousOptions) {
    this.#options = options;
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

  #open(): void {
    const { listen } = this.#options;
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
      this.#track(this.#udpLoop(udp, port === bound.port));
    }
    this.#options.log.info("rendezvous server listening", {
      address: formatAddress(bound),
      probePorts: (this.#options.probePorts ?? []).join(",") || "none",
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

  async #acceptLoop(listener: Socket, probeOnly: boolean): Promise<void> {
    const signal = this.#stopped.signal;
    while (!signal.aborted) {
      let accepted;
      try {
        accepted = await listener.accept(signal);
      } catch (error) {
        if (signal.aborted) return;
        this.#options.log.warn("accept failed", { error: (error as Error).message });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (probeOnly) {
        // Answer at once and close first: the TIME_WAIT stays on this side.
        const { socket, address } = accepted;
        this.#track(
          socket.write(encoder.encode(observedLine(address)), AbortSignal.timeout(2000)).finally(
            () => socket.close(),
          ),
        );
        continue;
      }
      const peer = new Peer(accepted.socket, accepted.address);
      this.#peers.add(peer);
      this.#track(this.#serve(peer));
    }
  }

  async #udpLoop(socket: Socket, main: boolean): Promise<void> {
    const buf = new Uint8Array(1500);
    const signal = this.#stopped.signal;
    const decoder = new TextDecoder();
    while (!signal.aborted) {
      let from: SocketAddress;
      let length: number;
      try {
        ({ from, length } = await socket.receiveFrom(buf, signal));
      } catch (error) {
        if (signal.aborted) return;
        this.#options.log.warn("udp receive failed", { error: (error as Error).message });
        continue;
      }
      // Probe ports answer anything with the observed endpoint; the main port speaks the UDP protocol.
      const replies = main
        ? this.#udpRequest(decoder.decode(buf.subarray(0, Math.min(length, 512))).trim(), from)
        : [{ to: from, text: observedLine(from).trimEnd() }];
      for (const reply of replies) {
        try {
          await socket.sendTo(encoder.encode(reply.text), reply.to, AbortSignal.timeout(1000));
        } catch (error) {
          this.#options.log.debug("udp reply failed", {
            to: formatAddress(reply.to),
            error: (error as Error).message,
          });
        }
      }
    }
  }

  /**
   * One UDP request on the main port; returns the datagrams to send. See
   * `codec.ts` for the protocol: register, keepalive, connect, observe.
   */
  #udpRequest(text: string, from: SocketAddress): { to: SocketAddress; text: string }[] {
    const now = Date.now();
    const expiry = this.#options.udpExpiryMs ?? 60_000;
    for (const [name, r] of this.#udpNames) if (r.expires <= now) this.#udpNames.delete(name);
    const reply = (t: string) => [{ to: from, text: t }];
    const [command = "", name = "", ...rest] = text.split("|");
    if (command === "observe" && name === "") return reply(observedLine(from).trimEnd());
    if (!["register", "keepalive", "connect"].includes(command)) {
      return reply(`error|-|unknown command "${command.slice(0, 20)}"`);
    }
    if (rest.length > 0 || !isPeerId(name)) {
      return reply(`error|${command}|bad name (1-128 of A-Z a-z 0-9 . _ : @ + = / -)`);
    }
    const held = this.#udpNames.get(name);
    const mine = held !== undefined && sameAddress(held.endpoint, from);
    switch (command) {
      case "register":
        if (held !== undefined && !mine) return reply(`error|register|name is taken`);
        if (held === undefined && this.#udpNames.size >= (this.#options.maxPeers ?? 1000)) {
          return reply("error|register|too many registrations");
        }
        this.#udpNames.set(name, { endpoint: from, expires: now + expiry });
        return reply(`registered|${name}|${endpointText(from)}`);
      case "keepalive":
        if (!mine || held === undefined) {
          return reply(`error|keepalive|unknown name (expired or not yours)`);
        }
        held.expires = now + expiry;
        return reply(`alive|${name}`);
      default: {
        if (held === undefined) return reply(`unknown|${name}`);
        // Both sides learn the other's endpoint; they punch to each other from there.
        return [
          { to: from, text: `peer|${name}|${endpointText(held.endpoint)}` },
          { to: held.endpoint, text: `peer|-|${endpointText(from)}` },
        ];
      }
    }
  }

  async #serve(peer: Peer): Promise<void> {
    const splitter = new LineSplitter(MAX_LINE);
    const buf = new Uint8Array(4096);
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const signal = AbortSignal.any([this.#stopped.signal, peer.closed.signal]);
    try {
      for (;;) {
        const n = await peer.socket.read(buf, signal);
        if (n === 0) return;
        for (const line of splitter.push(buf.subarray(0, n))) {
          if (line.kind === "too-long") {
            peer.send(`error|-|line longer than ${MAX_LINE} bytes\n`);
            continue;
          }
          let text: string;
          try {
            text = decoder.decode(line.bytes);
          } catch {
            peer.send("error|-|line is not valid UTF-8\n");
            continue;
          }
          try {
            this.#handle(peer, decodeRendezvousRequest(text));
          } catch (error) {
            const command = error instanceof RendezvousError ? error.command : "-";
            peer.send(`error|${command}|${(error as Error).message.replace(/[|\n\r]/g, " ")}\n`);
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

  #handle(peer: Peer, request: RendezvousRequest): void {
    switch (request.type) {
      case "register": {
        if (peer.id === request.peerId) return peer.send(`ok|register|${peer.id}\n`);
        if (peer.id !== null) {
          throw new RendezvousError("register", `this connection is registered as ${peer.id}`);
        }
        if (this.#byId.has(request.peerId)) {
          throw new RendezvousError("register", "peer ID is taken");
        }
        if (this.#byId.size >= (this.#options.maxPeers ?? 1000)) {
          throw new RendezvousError("register", "too many peers");
        }
        peer.id = request.peerId;
        this.#byId.set(peer.id, peer);
        this.#options.log.info("peer registered", {
          peer: peer.id,
          from: formatAddress(peer.address),
        });
        return peer.send(`ok|register|${peer.id}\n`);
      }
      case "publish":
        if (peer.id === null) throw new RendezvousError("publish", "register first");
        peer.endpoints.set(request.protocol, { ip: request.ip, ports: request.ports });
        return peer.send(`ok|publish|${request.protocol}\n`);
      case "query": {
        const target = this.#byId.get(request.peerId);
        if (target === undefined) throw new RendezvousError("query", "unknown peer");
        const endpoint = target.endpoints.get(request.protocol);
        if (endpoint === undefined) {
          throw new RendezvousError("query", `peer has published no ${request.protocol} endpoint`);
        }
        return peer.send(
          `peer|${request.peerId}|${request.protocol}|${endpoint.ip}|${endpoint.ports.join(",")}\n`,
        );
      }
      case "notify": {
        if (peer.id === null) throw new RendezvousError("notify", "register first");
        const target = this.#byId.get(request.peerId);
        if (target === undefined) throw new RendezvousError("notify", "unknown peer");
        target.send(`notify|${peer.id}|${request.payload}\n`);
        return peer.send(`ok|notify|${request.peerId}\n`);
      }
      case "observe":
        return peer.send(observedLine(peer.address));
      case "ping":
        return peer.send("pong\n");
    }
  }

  #drop(peer: Peer): void {
    peer.close();
    this.#peers.delete(peer);
    if (peer.id !== null && this.#byId.get(peer.id) === peer) {
      this.#byId.delete(peer.id);
      this.#options.log.info("peer unregistered", { peer: peer.id });
    }
  }

  /** Closes every socket; resolves when every task has ended. */
  async stop(): Promise<void> {
    this.#stopped.abort();
    for (const socket of [...this.#listeners, ...this.#udp]) socket.close();
    for (const peer of [...this.#peers]) this.#drop(peer);
    while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
  }
}
