/**
 * A client of the rendezvous server for peer programs: requests answered in
 * order, notifications from other peers delivered on their own queue.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import { LineSplitter } from "../control/connection.ts";
import { decodeRendezvousReply, isCredential, MAX_LINE, type RendezvousReply } from "./codec.ts";

/** The rendezvous server answered `error|COMMAND|REASON`. */
export class RendezvousRefused extends Error {
  /** Builds the error. */
  constructor(command: string, reason: string) {
    super(`rendezvous server refused ${command}: ${reason}`);
    this.name = "RendezvousRefused";
  }
}

/** A notification from another peer. */
export interface Notification {
  from: string;
  payload: string;
}

const encoder = new TextEncoder();

/** A connection to the rendezvous server. */
export class RendezvousClient {
  readonly #socket: Socket;
  readonly #pending: { resolve: (r: RendezvousReply) => void; reject: (e: Error) => void }[] = [];
  readonly #notifications: Notification[] = [];
  readonly #waiters: { resolve: (n: Notification) => void; reject: (e: Error) => void }[] = [];
  readonly #reading: Promise<void>;
  #failure: Error | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.#reading = this.#readLoop();
  }

  /** Connects to the server. */
  static async connect(address: InetAddress, signal?: AbortSignal): Promise<RendezvousClient> {
    const socket = Socket.create(address.family, "stream");
    try {
      await socket.connect(address, signal);
    } catch (error) {
      socket.close();
      throw error;
    }
    return new RendezvousClient(socket);
  }

  async #request(line: string): Promise<RendezvousReply> {
    if (this.#failure) throw this.#failure;
    const reply = new Promise<RendezvousReply>((resolve, reject) =>
      this.#pending.push({ resolve, reject })
    );
    await this.#socket.write(encoder.encode(line + "\n"));
    const answer = await reply;
    if (answer.type === "error") throw new RendezvousRefused(answer.command, answer.reason);
    return answer;
  }

  /**
   * Registers this connection's peer ID, with the ID's credential when the
   * server requires one (`--secret-file`) or to bind the ID to it. A server
   * closes the connection after a wrong credential.
   */
  async register(peerId: string, credential?: string): Promise<void> {
    if (credential !== undefined && !isCredential(credential)) {
      throw new RangeError("Cannot register: a credential is 16-128 of A-Z a-z 0-9 _ -");
    }
    await this.#request(
      credential === undefined ? `register|${peerId}` : `register|${peerId}|${credential}`,
    );
  }

  /** Publishes this peer's endpoint for a protocol. */
  async publish(protocol: "tcp" | "udp", ip: string, ports: number[]): Promise<void> {
    await this.#request(`publish|${protocol}|${ip}|${ports.join(",")}`);
  }

  /** Another peer's published endpoint. */
  async query(peerId: string, protocol: "tcp" | "udp"): Promise<{ ip: string; ports: number[] }> {
    const reply = await this.#request(`query|${peerId}|${protocol}`);
    if (reply.type !== "peer") {
      throw new Error(`Cannot query ${peerId}: unexpected reply ${reply.type}`);
    }
    return { ip: reply.ip, ports: reply.ports };
  }

  /** Sends an opaque payload to another peer. */
  async notify(peerId: string, payload: string): Promise<void> {
    await this.#request(`notify|${peerId}|${payload}`);
  }

  /** The next notification from another peer. */
  nextNotification(signal?: AbortSignal): Promise<Notification> {
    const queued = this.#notifications.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#failure) return Promise.reject(this.#failure);
    // An abort listener added to a signal that is already aborted never runs: the wait would
    // never end (the example peer hung this way when the peer's last message came as it stopped).
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.#waiters.push(waiter);
      signal?.addEventListener("abort", () => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal.reason);
      }, { once: true });
    });
  }

  async #readLoop(): Promise<void> {
    const splitter = new LineSplitter(MAX_LINE * 2);
    const buf = new Uint8Array(4096);
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const n = await this.#socket.read(buf);
        if (n === 0) throw new Error("the rendezvous server closed the connection");
        for (const line of splitter.push(buf.subarray(0, n))) {
          if (line.kind !== "line") continue;
          const reply = decodeRendezvousReply(decoder.decode(line.bytes));
          if (reply.type === "notify") {
            const note = { from: reply.from, payload: reply.payload };
            const waiter = this.#waiters.shift();
            if (waiter) waiter.resolve(note);
            else this.#notifications.push(note);
          } else {
            this.#pending.shift()?.resolve(reply);
          }
        }
      }
    } catch (error) {
      this.#failure = error as Error;
      for (const p of this.#pending.splice(0)) p.reject(this.#failure);
      for (const w of this.#waiters.splice(0)) w.reject(this.#failure);
    }
  }

  /** Closes the connection (the server unregisters this peer). */
  async close(): Promise<void> {
    this.#socket.close();
    await this.#reading;
  }
}
