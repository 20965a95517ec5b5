/**
 * Test clients of the rendezvous server: a TCP line peer and a UDP peer, on
 * loopback, optionally from another loopback address (127.0.0.2 and so on)
 * to play a second source address.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { Logger } from "../../src/log.ts";
import { type RendezvousOptions, RendezvousServer } from "../../src/rendezvous/server.ts";
import { readLines } from "../helpers/daemon.ts";

/** Runs `fn` with a rendezvous server on 127.0.0.1 (a port the kernel picks) and `options`, then stops it. */
export async function withServer(
  options: Partial<RendezvousOptions>,
  fn: (server: RendezvousServer) => Promise<void>,
): Promise<void> {
  const server = RendezvousServer.start({
    listen: inetAddress("127.0.0.1", 0),
    log: new Logger("error", () => {}),
    ...options,
  });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

const encoder = new TextEncoder();

/** A TCP peer that sends lines and reads replies. */
export class LinePeer {
  readonly socket: Socket;
  private constructor(socket: Socket) {
    this.socket = socket;
  }
  /** Connects to `server`, from `fromIp` when given. */
  static async connect(server: InetAddress, fromIp?: string): Promise<LinePeer> {
    const socket = Socket.create("inet", "stream");
    try {
      if (fromIp !== undefined) socket.bind(inetAddress(fromIp, 0));
      await socket.connect(server, AbortSignal.timeout(5000));
    } catch (error) {
      socket.close();
      throw error;
    }
    return new LinePeer(socket);
  }
  /** Sends one line. */
  async send(line: string): Promise<void> {
    await this.socket.write(encoder.encode(line + "\n"), AbortSignal.timeout(5000));
  }
  /** Sends a line and reads `replies` lines. */
  async ask(line: string, replies = 1, timeoutMs = 5000): Promise<string[]> {
    await this.send(line);
    return await readLines(this.socket, replies, timeoutMs);
  }
  /** Everything until the server closes the connection (throws after `timeoutMs`). */
  async readToEnd(timeoutMs = 5000): Promise<string> {
    const signal = AbortSignal.timeout(timeoutMs);
    const buf = new Uint8Array(65536);
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      let n: number;
      try {
        n = await this.socket.read(buf, signal);
      } catch (error) {
        // A reset after the server closed with unread data also ends the stream.
        if ((error as Error).message.includes("ECONNRESET")) return text;
        throw error;
      }
      if (n === 0) return text;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
  }
  /** Closes the socket. */
  close(): void {
    this.socket.close();
  }
}

/** A UDP peer on loopback. */
export class UdpPeer {
  readonly socket = Socket.create("inet", "datagram");
  /** Binds to `ip` (default 127.0.0.1), port picked by the kernel. */
  constructor(ip = "127.0.0.1") {
    this.socket.bind(inetAddress(ip, 0));
  }
  /** The bound port. */
  get port(): number {
    return (this.socket.localAddress() as { port: number }).port;
  }
  /** Sends one datagram. */
  async send(server: InetAddress, text: string): Promise<void> {
    await this.socket.sendTo(encoder.encode(text), server, AbortSignal.timeout(5000));
  }
  /** Receives one datagram. */
  async receive(timeoutMs = 3000): Promise<string> {
    const buf = new Uint8Array(600);
    const { length } = await this.socket.receiveFrom(buf, AbortSignal.timeout(timeoutMs));
    return new TextDecoder().decode(buf.subarray(0, length));
  }
  /** Sends and receives the answer. */
  async ask(server: InetAddress, text: string, timeoutMs = 3000): Promise<string> {
    await this.send(server, text);
    return await this.receive(timeoutMs);
  }
  /** Closes the socket. */
  close(): void {
    this.socket.close();
  }
}
