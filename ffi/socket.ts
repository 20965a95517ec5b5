/**
 * `Socket`: an owned, non-blocking socket fd with promise-based I/O through
 * the thread's reactor, and stream adapters for applications.
 *
 * @module
 */

import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  IP_TTL,
  IPPROTO_IP,
  IPPROTO_IPV6,
  IPV6_UNICAST_HOPS,
  IPV6_V6ONLY,
  MSG_PEEK,
  SHUT_WR,
  SO_REUSEADDR,
  SO_REUSEPORT,
  SOCK_DGRAM,
  SOCK_STREAM,
  SOL_SOCKET,
} from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { noteOpened, noteReleased } from "./fd_ledger.ts";
import { reactor } from "./reactor.ts";
import type { BpfInstruction, SocketAddress } from "./structs.ts";
import * as sys from "./syscalls.ts";

/** Thrown by operations on a socket after close() or detach(). */
export class SocketClosedError extends Error {
  /** Builds the error for the operation `what`. */
  constructor(what: string) {
    super(`Cannot ${what}: the socket is closed`);
    this.name = "SocketClosedError";
  }
}

/** Options for creating a socket. */
export interface SocketOptions {
  /** SO_REUSEADDR (default false). */
  reuseAddress?: boolean;
  /** SO_REUSEPORT (default false). */
  reusePort?: boolean;
  /** IPV6_V6ONLY for AF_INET6 sockets (default true). */
  v6Only?: boolean;
}

/**
 * An fd-owning, non-blocking socket. `close()` is idempotent; `detach()`
 * gives the fd up to a new owner (another thread, or SCM_RIGHTS).
 */
export class Socket {
  #fd: number;

  /** Takes ownership of an open, non-blocking socket fd. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Cannot own fd ${fd}`);
    this.#fd = fd;
    noteOpened(fd, "socket");
  }

  /** Creates a socket of the family of `address` ("inet", "inet6" or "unix"). */
  static create(
    family: SocketAddress["family"],
    type: "stream" | "datagram",
    options: SocketOptions = {},
  ): Socket {
    const domain = family === "inet" ? AF_INET : family === "inet6" ? AF_INET6 : AF_UNIX;
    const fd = sys.socket(domain, type === "stream" ? SOCK_STREAM : SOCK_DGRAM);
    const socket = new Socket(fd);
    try {
      if (options.reuseAddress) sys.setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      if (options.reusePort) sys.setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1);
      if (domain === AF_INET6) {
        sys.setIntOption(fd, IPPROTO_IPV6, IPV6_V6ONLY, options.v6Only === false ? 0 : 1);
      }
    } catch (error) {
      socket.close();
      throw error;
    }
    return socket;
  }

  /** The fd, or -1 once closed or detached. */
  get fd(): number {
    return this.#fd;
  }

  /** True until close() or detach(). */
  get isOpen(): boolean {
    return this.#fd >= 0;
  }

  #live(what: string): number {
    if (this.#fd < 0) throw new SocketClosedError(what);
    return this.#fd;
  }

  /** bind(2). */
  bind(address: SocketAddress): void {
    sys.bind(this.#live("bind"), address);
  }

  /** setsockopt(2) of a C int option. */
  setOption(level: number, name: number, value: number): void {
    sys.setIntOption(this.#live("set an option"), level, name, value);
  }

  /** getsockopt(2) of a C int option. */
  getOption(level: number, name: number): number {
    return sys.getIntOption(this.#live("get an option"), level, name);
  }

  /** SO_ATTACH_FILTER: `program` (classic BPF) decides what the socket queues; replaces any filter. */
  attachFilter(program: readonly BpfInstruction[]): void {
    sys.attachFilter(this.#live("attach a filter"), program);
  }

  /** The unicast TTL (IPv4) or hop limit (IPv6) of outgoing packets. */
  hopLimit(): number {
    const v6 = this.localAddress().family === "inet6";
    return this.getOption(v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL);
  }

  /** Sets the unicast TTL (IPv4) or hop limit (IPv6) of outgoing packets. */
  setHopLimit(hops: number): void {
    const v6 = this.localAddress().family === "inet6";
    this.setOption(v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL, hops);
  }

  /** listen(2). */
  listen(backlog = 128): void {
    sys.listen(this.#live("listen"), backlog);
  }

  /** getsockname(2). */
  localAddress(): SocketAddress {
    return sys.localAddress(this.#live("get the local address"));
  }

  /** getpeername(2). */
  peerAddress(): SocketAddress {
    return sys.peerAddress(this.#live("get the peer address"));
  }

  /** Waits until the socket is readable (or has an error). */
  async readable(signal?: AbortSignal): Promise<void> {
    await reactor().wait(this.#live("wait"), "readable", signal);
  }

  /** Waits until the socket is writable (or has an error). */
  async writable(signal?: AbortSignal): Promise<void> {
    await reactor().wait(this.#live("wait"), "writable", signal);
  }

  /** Accepts one connection, waiting for it. */
  async accept(signal?: AbortSignal): Promise<{ socket: Socket; address: SocketAddress }> {
    for (;;) {
      const accepted = sys.accept(this.#live("accept"));
      if (accepted !== null) return { socket: new Socket(accepted.fd), address: accepted.address };
      await this.readable(signal);
    }
  }

  /** Connects, waiting for the handshake; throws SyscallError("connect", ...) on failure. */
  async connect(address: SocketAddress, signal?: AbortSignal): Promise<void> {
    if (sys.connect(this.#live("connect"), address) === "connected") return;
    await this.writable(signal);
    const error = sys.socketError(this.#live("connect"));
    if (error !== 0) throw new SyscallError("connect", error);
  }

  /** Reads into `buf`; resolves with the byte count, 0 at end of stream. */
  async read(buf: Uint8Array<ArrayBuffer>, signal?: AbortSignal): Promise<number> {
    for (;;) {
      const n = sys.recv(this.#live("read"), buf);
      if (n !== null) return n;
      await this.readable(signal);
    }
  }

  /** Writes all of `data`, waiting for room as needed. */
  async write(data: Uint8Array<ArrayBuffer>, signal?: AbortSignal): Promise<void> {
    let offset = 0;
    while (offset < data.byteLength) {
      const n = sys.send(this.#live("write"), offset === 0 ? data : data.slice(offset));
      if (n === null) await this.writable(signal);
      else offset += n;
    }
  }

  /**
   * Sends `data` with `fds` attached (SCM_RIGHTS) in one sendmsg. The fds
   * travel with the first byte; the rest of `data`, if the kernel took only
   * part of it, follows without them.
   */
  async sendWithFds(
    data: Uint8Array<ArrayBuffer>,
    fds: readonly number[],
    signal?: AbortSignal,
  ): Promise<void> {
    for (;;) {
      const n = sys.sendMessage(this.#live("send"), data, fds);
      if (n === null) {
        await this.writable(signal);
        continue;
      }
      if (n < data.byteLength) await this.write(data.slice(n), signal);
      return;
    }
  }

  /** Receives data and any passed fds (which the caller then owns). */
  async receiveWithFds(
    buf: Uint8Array<ArrayBuffer>,
    maxFds = 8,
    signal?: AbortSignal,
  ): Promise<sys.ReceivedMessage> {
    for (;;) {
      const received = sys.receiveMessage(this.#live("receive"), buf, maxFds);
      if (received !== null) return received;
      await this.readable(signal);
    }
  }

  /** Waits for data and copies it into `buf` without consuming it (MSG_PEEK). */
  async peek(buf: Uint8Array<ArrayBuffer>, signal?: AbortSignal): Promise<number> {
    for (;;) {
      const n = sys.recv(this.#live("peek"), buf, MSG_PEEK);
      if (n !== null) return n;
      await this.readable(signal);
    }
  }

  /** Sends one datagram to `to`, waiting for room. */
  async sendTo(
    data: Uint8Array<ArrayBuffer>,
    to: SocketAddress,
    signal?: AbortSignal,
  ): Promise<number> {
    for (;;) {
      const n = sys.sendTo(this.#live("send"), data, to);
      if (n !== null) return n;
      await this.writable(signal);
    }
  }

  /** Receives one datagram. */
  async receiveFrom(
    buf: Uint8Array<ArrayBuffer>,
    signal?: AbortSignal,
  ): Promise<{ length: number; from: SocketAddress }> {
    for (;;) {
      const r = sys.recvFrom(this.#live("receive"), buf);
      if (r !== null) return r;
      await this.readable(signal);
    }
  }

  /** shutdown(SHUT_WR): the peer reads end of stream. */
  closeWrite(): void {
    sys.shutdown(this.#live("shut down"), SHUT_WR);
  }

  /**
   * Gives up ownership: the fd leaves this thread's reactor and is returned;
   * this object no longer closes it.
   */
  detach(): number {
    const fd = this.#live("detach");
    reactor().forget(fd);
    this.#fd = -1;
    noteReleased(fd);
    return fd;
  }

  /** Closes the fd once; later calls do nothing. Pending waits reject. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    reactor().forget(fd);
    noteReleased(fd);
    try {
      sys.close(fd);
    } catch (error) {
      // Linux releases the fd even when close reports EINTR or EIO; EBADF
      // would mean a double close elsewhere, which there is nothing to do about.
      if (!(error instanceof SyscallError)) throw error;
    }
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * A readable/writable stream pair over this socket, for applications. The
   * readable ends at end of stream; closing the writable half-closes
   * (shutdown SHUT_WR); cancelling the readable or aborting the writable
   * closes the socket. Close the socket itself when done with both.
   */
  streams(
    chunkSize = 16384,
  ): { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> } {
    const readable = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const buf = new Uint8Array(chunkSize);
        const n = await this.read(buf);
        if (n === 0) controller.close();
        else controller.enqueue(buf.subarray(0, n));
      },
      cancel: () => this.close(),
    });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => this.write(new Uint8Array(chunk)),
      close: () => {
        if (this.isOpen) this.closeWrite();
      },
      abort: () => this.close(),
    });
    return { readable, writable };
  }
}
