/**
 * One TCP connection to the rendezvous server and its bounded output queue.
 *
 * Replies and notifications wait in a queue of at most `maxQueuedBytes`
 * that one writer drains. The server stops reading a connection whose queue
 * is full (its own replies then stop growing it) and waits for `drained()`;
 * notifications from others are offered and refused when they do not fit,
 * so a flood costs the sender, never the receiver. A connection whose
 * writer makes no progress for `stuckTimeoutMs` (the peer reads nothing) is
 * closed.
 *
 * ```
 *            queue >= max                 queue <= max/2
 *  reading ───────────────► paused ────────────────────────► reading
 *                             │ no write progress for stuckTimeoutMs
 *                             ▼
 *                           closed
 * ```
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import { addressKey } from "./limits.ts";

/** Options of a connection's output. */
export interface ConnectionOptions {
  /** Bytes queued for the peer at most (replies may overshoot it by one line). */
  maxQueuedBytes: number;
  /** Milliseconds without write progress before a connection with queued bytes is closed. */
  stuckTimeoutMs: number;
}

/** Largest single write: small enough that a slowly reading peer still makes progress. */
const WRITE_CHUNK = 4096;
/** How long a finished connection waits for its peer to close, in milliseconds. */
const LINGER_MS = 2000;
const encoder = new TextEncoder();

/** A TCP connection of a peer. */
export class PeerConnection {
  /** The socket (owned: closed by close()). */
  readonly socket: Socket;
  /** The peer's address as the server sees it. */
  readonly address: SocketAddress;
  /** The per-address limit key of `address`. */
  readonly key: string;
  /** The registered ID, or null before register. */
  id: string | null = null;
  /** Published endpoints by protocol. */
  readonly endpoints = new Map<string, { ip: string; ports: number[] }>();
  /** Aborted when the connection closes. */
  readonly closed = new AbortController();
  readonly #options: ConnectionOptions;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #finishing = false;
  #drainWaiters: (() => void)[] = [];

  /** Wraps an accepted socket. */
  constructor(socket: Socket, address: SocketAddress, options: ConnectionOptions) {
    this.socket = socket;
    this.address = address;
    this.key = addressKey(address);
    this.#options = options;
  }

  /** Bytes waiting to be written. */
  get queuedBytes(): number {
    return this.#queued;
  }

  /** True when the queue is at its limit: stop reading this peer until `drained()`. */
  get isFull(): boolean {
    return this.#queued >= this.#options.maxQueuedBytes;
  }

  /** True once `finish()` was called: read nothing more from this peer. */
  get finishing(): boolean {
    return this.#finishing;
  }

  /** Queues a last line after everything queued, then closes once it is written. */
  finish(line: string): void {
    if (this.#finishing) return;
    this.#enqueue(encoder.encode(line));
    this.#finishing = true;
  }

  /** Queues one of this peer's own replies (the reader pauses before the queue grows further). */
  reply(line: string): void {
    this.#enqueue(encoder.encode(line));
  }

  /** Queues a line from someone else if it fits; false (nothing queued) when it does not. */
  offer(line: string): boolean {
    const bytes = encoder.encode(line);
    if (this.#finishing || this.#queued + bytes.length > this.#options.maxQueuedBytes) {
      return false;
    }
    this.#enqueue(bytes);
    return true;
  }

  /** Resolves once the queue is at most half full; rejects when the connection closes. */
  drained(): Promise<void> {
    if (this.#queued <= this.#options.maxQueuedBytes / 2) return Promise.resolve();
    if (this.closed.signal.aborted) return Promise.reject(this.closed.signal.reason);
    return new Promise((resolve, reject) => {
      const onClose = () => reject(this.closed.signal.reason);
      this.closed.signal.addEventListener("abort", onClose, { once: true });
      this.#drainWaiters.push(() => {
        this.closed.signal.removeEventListener("abort", onClose);
        resolve();
      });
    });
  }

  #enqueue(bytes: Uint8Array): void {
    if (this.closed.signal.aborted || this.#finishing) return;
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    if (!this.#writing) void this.#flush();
  }

  /** The one writer: drains the queue in chunks, each under the stuck timeout. */
  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.closed.signal.aborted) {
        const chunk = this.#take();
        const timer = setTimeout(
          () => this.close(new Error("Cannot write to the peer: it reads nothing")),
          this.#options.stuckTimeoutMs,
        );
        try {
          await this.socket.write(chunk, this.closed.signal);
        } finally {
          clearTimeout(timer);
        }
        this.#queued -= chunk.length;
        if (this.#queued <= this.#options.maxQueuedBytes / 2 && this.#drainWaiters.length > 0) {
          for (const wake of this.#drainWaiters.splice(0)) wake();
        }
      }
      if (this.#finishing) await this.#linger();
    } catch (error) {
      this.close(error);
    } finally {
      this.#writing = false;
    }
  }

  /**
   * Half-closes after the last reply and reads (discarding) until the peer
   * closes too, for at most LINGER_MS: closing with unread input would send
   * a reset, which makes the peer's kernel throw away the replies it has not
   * read yet, the last one among them.
   */
  async #linger(): Promise<void> {
    const timer = setTimeout(() => this.close(), Math.min(LINGER_MS, this.#options.stuckTimeoutMs));
    try {
      this.socket.closeWrite();
      const buf = new Uint8Array(4096);
      for (;;) {
        await this.socket.readable(this.closed.signal);
        if (await this.socket.read(buf, this.closed.signal) === 0) break;
      }
    } catch {
      // Closed by the timer, or the peer reset: closing is all that is left.
    } finally {
      clearTimeout(timer);
      this.close();
    }
  }

  /** Joins queued lines into one buffer of at most WRITE_CHUNK bytes (or one longer line). */
  #take(): Uint8Array<ArrayBuffer> {
    let size = 0;
    let count = 0;
    for (const piece of this.#queue) {
      if (count > 0 && size + piece.length > WRITE_CHUNK) break;
      size += piece.length;
      count++;
    }
    const chunk = new Uint8Array(size);
    let offset = 0;
    for (const piece of this.#queue.splice(0, count)) {
      chunk.set(piece, offset);
      offset += piece.length;
    }
    return chunk;
  }

  /** Closes the socket once and drops what is queued. */
  close(reason?: unknown): void {
    if (this.closed.signal.aborted) return;
    this.closed.abort(reason ?? new Error("Cannot use the connection: it is closed"));
    this.#queue = [];
    this.#queued = 0;
    this.#drainWaiters = [];
    this.socket.close();
  }
}
