/**
 * One unconnected socket per local endpoint, shared by a worker's
 * concurrent `udp` attempts on that port (a session's many clients).
 * Separate sockets with SO_REUSEPORT would hash each peer to one of them,
 * often the wrong attempt's. Punches carry no token, so each datagram is
 * offered to the attempts in turn; the first that accepts it (right source
 * address and a MAC under its key) takes it, and when none does each
 * attempt hears why it refused.
 *
 * The socket queues ICMP errors (IP_RECVERR): every attempt hears each one,
 * with the destination of the datagram that provoked it and the address of
 * the node that sent it. Each wake-up drains the error queue before the
 * datagrams, so a queued error can never keep the socket readable in vain.
 *
 * @module
 */

import { enableErrorQueue, type QueuedError, readErrorQueue } from "../../ffi/errqueue.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, type SocketAddress } from "../../ffi/structs.ts";
import type { PunchRejection } from "./udp_punch.ts";
import { isIcmpError } from "./udp_policy.ts";

/** One attempt listening on a shared port. */
export interface ShareReceiver {
  /** Takes the datagram (null) or says why it is not this attempt's. */
  offer(bytes: Uint8Array, from: SocketAddress): PunchRejection | null;
  /** Told when no attempt took a datagram, with this attempt's own reason. */
  refused(reason: PunchRejection, from: SocketAddress): void;
  /** Told of every ICMP error a datagram sent from the socket provoked. */
  icmp?(error: QueuedError): void;
}

/** A shared socket; acquire, register, and release it. */
export class PortShare {
  static readonly #shares = new Map<string, PortShare>();
  /** The shared socket (attempts send their punches from it). */
  readonly socket: Socket;
  readonly #key: string;
  readonly #receivers = new Set<ShareReceiver>();
  #refs = 0;

  private constructor(socket: Socket, key: string) {
    this.socket = socket;
    this.#key = key;
    void this.#loop();
  }

  /** The share for `local`, binding its socket on first use. */
  static acquire(local: InetAddress): PortShare {
    const key = formatAddress(local);
    let share = PortShare.#shares.get(key);
    if (share === undefined) {
      const socket = Socket.create(local.family, "datagram", {
        reuseAddress: true,
        reusePort: true,
      });
      try {
        socket.bind(local);
        enableErrorQueue(socket);
      } catch (error) {
        socket.close();
        throw error;
      }
      share = new PortShare(socket, key);
      PortShare.#shares.set(key, share);
    }
    share.#refs++;
    return share;
  }

  /** Offers every datagram to `receiver` until the returned function is called. */
  register(receiver: ShareReceiver): () => void {
    this.#receivers.add(receiver);
    return () => this.#receivers.delete(receiver);
  }

  /** Drops one reference; the last one closes the socket. */
  release(): void {
    if (--this.#refs > 0) return;
    PortShare.#shares.delete(this.#key);
    this.socket.close();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(128);
    // A receive that never waits: it takes what is queued or rejects at once.
    const now = AbortSignal.abort();
    try {
      for (;;) {
        await this.socket.readable();
        for (let e = readErrorQueue(this.socket); e !== null; e = readErrorQueue(this.socket)) {
          for (const receiver of this.#receivers) receiver.icmp?.(e);
        }
        // A bounded batch, then the error queue again.
        for (let i = 0; i < 64; i++) {
          let got: { length: number; from: SocketAddress };
          try {
            got = await this.socket.receiveFrom(buf, now);
          } catch (error) {
            // The error the last ICMP error left (its details are queued): read, and so cleared.
            if (isIcmpError(error)) continue;
            if (error === now.reason) break;
            throw error;
          }
          this.#deliver(buf.subarray(0, got.length), got.from);
        }
      }
    } catch {
      // Closed by the last release.
    }
  }

  /** Offers a datagram to the attempts in turn; when none takes it, each hears why. */
  #deliver(bytes: Uint8Array, from: SocketAddress): void {
    const refusals: [ShareReceiver, PunchRejection][] = [];
    for (const receiver of this.#receivers) {
      const reason = receiver.offer(bytes, from);
      if (reason === null) return;
      refusals.push([receiver, reason]);
    }
    for (const [receiver, reason] of refusals) receiver.refused(reason, from);
  }
}
