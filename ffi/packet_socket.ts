/**
 * Packet capture and raw IP sending for techniques that see and craft TCP
 * handshakes (tcp-syni).
 *
 * - `CaptureSocket`: an AF_PACKET socket for all protocols (only ETH_P_ALL
 *   taps see the host's own outgoing packets), in cooked mode (packets start
 *   at the IP header), created bound to no protocol so that it queues
 *   nothing until its BPF filter is attached, then bound to ETH_P_ALL. It is
 *   opened for one attempt's flow and closed at its end.
 * - `RawSender`: a send-only raw IP socket (IPPROTO_RAW: the caller writes
 *   the whole IP header; such sockets receive nothing).
 *
 * @module
 */

import {
  AF_INET,
  AF_INET6,
  AF_PACKET,
  ETH_P_ALL,
  IPPROTO_RAW,
  SOCK_DGRAM,
  SOCK_RAW,
} from "./constants.ts";
import { Socket } from "./socket.ts";
import type { BpfInstruction, InetAddress, LinkAddress } from "./structs.ts";
import * as sys from "./syscalls.ts";

/** One captured packet. */
export interface CapturedPacket {
  /** The IP packet (cooked mode: no link-layer header). */
  packet: Uint8Array;
  /** Where it was seen: pkttype (PACKET_OUTGOING = 4 for the host's own) and interface. */
  link: LinkAddress;
}

/** A filtered AF_PACKET capture socket. */
export class CaptureSocket {
  readonly #socket: Socket;

  private constructor(socket: Socket) {
    this.#socket = socket;
  }

  /** Opens a capture socket that queues only packets `program` accepts. */
  static open(program: readonly BpfInstruction[]): CaptureSocket {
    // Protocol 0: nothing is queued until bind, which comes after the filter.
    const socket = new Socket(sys.socket(AF_PACKET, SOCK_DGRAM, 0));
    try {
      sys.attachFilter(socket.fd, program);
      sys.bindLink(socket.fd, {
        protocol: ETH_P_ALL,
        ifindex: 0,
        hatype: 0,
        pkttype: 0,
        address: new Uint8Array(0),
      });
    } catch (error) {
      socket.close();
      throw error;
    }
    return new CaptureSocket(socket);
  }

  /** The fd (for tests). */
  get fd(): number {
    return this.#socket.fd;
  }

  /** The next packet the filter passes. */
  async next(signal?: AbortSignal): Promise<CapturedPacket> {
    const buf = new Uint8Array(65536);
    for (;;) {
      const got = sys.recvFromLink(this.#socket.fd, buf);
      if (got !== null) return { packet: buf.slice(0, got.length), link: got.from };
      await this.#socket.readable(signal);
    }
  }

  /** Closes the socket (idempotent). */
  close(): void {
    this.#socket.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** A send-only raw IP socket for whole packets the caller built. */
export class RawSender {
  readonly #socket: Socket;
  readonly family: "inet" | "inet6";

  private constructor(socket: Socket, family: "inet" | "inet6") {
    this.#socket = socket;
    this.family = family;
  }

  /** Opens a raw socket for IPv4 or IPv6 (IPPROTO_RAW implies a caller-built header). */
  static open(family: "inet" | "inet6"): RawSender {
    return new RawSender(
      new Socket(sys.socket(family === "inet" ? AF_INET : AF_INET6, SOCK_RAW, IPPROTO_RAW)),
      family,
    );
  }

  /** Sends one whole IP packet towards `destination` (its port is ignored). */
  async send(
    packet: Uint8Array<ArrayBuffer>,
    destination: InetAddress,
    signal?: AbortSignal,
  ): Promise<void> {
    if (destination.family !== this.family) {
      throw new TypeError(
        `Cannot send an ${destination.family} packet on an ${this.family} raw socket`,
      );
    }
    await this.#socket.sendTo(packet, { ...destination, port: 0 }, signal);
  }

  /** Closes the socket (idempotent). */
  close(): void {
    this.#socket.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
