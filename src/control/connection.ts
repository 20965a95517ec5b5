/**
 * One client connection on the control socket: splits the byte stream into
 * request lines (refusing over-long ones without losing sync), hands them out
 * one per turn of the server's {@linkcode TurnScheduler} (so a client that
 * pipelines requests cannot hold up the others), and writes replies one at
 * a time, an `ok` together with its fd in one sendmsg.
 *
 * @module
 */

import { POLLERR, POLLHUP, POLLOUT } from "../../ffi/constants.ts";
import { Socket } from "../../ffi/socket.ts";
import { pollNow } from "../../ffi/syscalls.ts";
import type { Ucred } from "../../ffi/structs.ts";
import { encodeReply, MAX_MESSAGE_BYTES, type Reply } from "./codec.ts";
import { TurnScheduler } from "./turns.ts";

/** The default control socket, in a root-owned runtime directory. */
export const DEFAULT_SOCKET_PATH = "/run/punchd/punchd.socket";

/** A line read from the client, or an over-long line that was discarded. */
export type Line = { kind: "line"; bytes: Uint8Array } | { kind: "too-long" };

const encoder = new TextEncoder();

/**
 * Splits bytes into `\n`-terminated lines of at most `maxBytes` (a `\r`
 * before the `\n` is dropped and not counted). A longer line is reported
 * once as "too-long" and skipped up to its `\n`.
 */
export class LineSplitter {
  readonly #maxBytes: number;
  #pending: Uint8Array = new Uint8Array(0);
  #discarding = false;

  /** A splitter for lines of at most `maxBytes` bytes before the `\n`. */
  constructor(maxBytes = MAX_MESSAGE_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** Feeds bytes; returns the lines they complete. */
  push(chunk: Uint8Array): Line[] {
    const lines: Line[] = [];
    // Room for the `\r` of a CRLF line while it is incomplete.
    const room = this.#maxBytes + 1;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (this.#discarding) {
        this.#discarding = false;
      } else if (this.#pending.byteLength + piece.byteLength > room) {
        lines.push({ kind: "too-long" });
      } else {
        let line = concat(this.#pending, piece);
        if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
        lines.push(
          line.byteLength > this.#maxBytes ? { kind: "too-long" } : { kind: "line", bytes: line },
        );
      }
      this.#pending = new Uint8Array(0);
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (!this.#discarding && rest.byteLength > 0) {
      if (this.#pending.byteLength + rest.byteLength > room) {
        lines.push({ kind: "too-long" });
        this.#discarding = true;
        this.#pending = new Uint8Array(0);
      } else {
        this.#pending = concat(this.#pending, rest);
      }
    }
    return lines;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b.slice();
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

/** A connected control client. */
export class ClientConnection {
  /** Daemon-wide number of this connection (for logs). */
  readonly number: number;
  /** SO_PEERCRED of the client. */
  readonly credentials: Ucred;
  readonly #socket: Socket;
  readonly #turns: TurnScheduler;
  #writes: Promise<void> = Promise.resolve();
  readonly #closed = new AbortController();

  /**
   * Wraps an accepted socket. `turns` is shared by every connection of a
   * server (default: one of its own, which takes turns with nobody).
   */
  constructor(socket: Socket, number: number, credentials: Ucred, turns = new TurnScheduler()) {
    this.#socket = socket;
    this.number = number;
    this.credentials = credentials;
    this.#turns = turns;
  }

  /** Aborted when the connection is closed. */
  get signal(): AbortSignal {
    return this.#closed.signal;
  }

  /**
   * Yields request lines until the client disconnects or the connection is
   * closed, each once this connection has its turn: handle a line before
   * asking for the next. Bytes are read only when the lines read before are
   * used up, so a client that pipelines waits in its own socket buffer.
   */
  async *lines(): AsyncGenerator<Line> {
    const splitter = new LineSplitter();
    const buf = new Uint8Array(4096);
    const signal = this.#closed.signal;
    try {
      for (;;) {
        const n = await this.#socket.read(buf, signal);
        if (n === 0) return;
        for (const line of splitter.push(buf.subarray(0, n))) {
          await this.#turns.turn(this, signal);
          yield line;
        }
      }
    } catch (error) {
      if (this.#closed.signal.aborted) return;
      throw error;
    }
  }

  /**
   * Queues a reply; replies go out in order. With `fd`, the reply and the fd
   * travel in one sendmsg (SCM_RIGHTS). Resolves when written; rejects when
   * the client is gone, and then closes the connection, so requests it left
   * unread are not served. The caller still owns (and closes) `fd`.
   */
  reply(reply: Reply, fd?: number): Promise<void> {
    const bytes = encoder.encode(encodeReply(reply));
    const write = async () => {
      if (this.#closed.signal.aborted) throw new Error("Cannot reply: the client disconnected");
      try {
        if (fd === undefined) await this.#socket.write(bytes, this.#closed.signal);
        else await this.#socket.sendWithFds(bytes, [fd], this.#closed.signal);
      } catch (error) {
        // The client is gone (EPIPE, ECONNRESET): stop serving the requests it left queued.
        this.close();
        throw error;
      }
    };
    const next = this.#writes.then(write);
    this.#writes = next.catch(() => {});
    return next;
  }

  /**
   * True when the client has closed its end entirely (not just shut down
   * writing, after which it still reads replies).
   */
  peerGone(): boolean {
    if (this.#closed.signal.aborted) return true;
    try {
      const [entry] = pollNow([{ fd: this.#socket.fd, events: POLLOUT }]);
      return ((entry?.revents ?? 0) & (POLLHUP | POLLERR)) !== 0;
    } catch {
      return true;
    }
  }

  /** Resolves once every queued reply is written (or failed). */
  async flushed(): Promise<void> {
    await this.#writes;
  }

  /** Closes the connection once; pending reads and writes end. */
  close(): void {
    if (this.#closed.signal.aborted) return;
    this.#closed.abort(new Error("connection closed"));
    this.#socket.close();
  }
}
