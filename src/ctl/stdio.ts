/**
 * Joins a punched socket to a byte stream pair (stdin/stdout), like netcat:
 * what `punchctl connect`/`listen` and the example peer do once connected.
 *
 * TCP, with both half-closes carried through:
 * ```
 *  input ──► socket     input ends ─► shutdown(SHUT_WR): the peer reads end of stream
 *  socket ──► output    the peer's end of stream ─► output drained and closed
 * ```
 * The join ends when both directions have ended, or when writing to the peer
 * fails after its end of stream (it closed the connection entirely: nothing
 * more can go there). Any other socket or output error ends it with that
 * error. Waiting for both directions is what keeps a one-way transfer whole
 * (`punchctl connect < file` to a `punchctl listen > copy` whose own input is
 * empty); a program that sees the output end should close the input.
 *
 * UDP: each input chunk is one datagram; each datagram received goes to the
 * output, except empty ones (punchd's keepalive) and late punch datagrams.
 * The join ends when the input ends.
 *
 * @module
 */

import type { Socket } from "../../ffi/socket.ts";
import { AF_UNIX, SHUT_WR, SOCK_DGRAM } from "../../ffi/constants.ts";
import { SyscallError } from "../../ffi/errno.ts";
import {
  close as closeFd,
  isOpen,
  readLink,
  shutdown,
  socket as openSocket,
} from "../../ffi/syscalls.ts";
import { PUNCH_MAGIC } from "../techniques/udp_punch.ts";

const STDOUT_FD = 1;

/** What /proc/self/fd/FD links to ("pipe:[123]", "socket:[45]", a path), or null. */
function fdTarget(fd: number): string | null {
  try {
    return readLink(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/**
 * Ends stdout for its reader at once, as closing it in C would: closing `Deno.stdout` or its
 * `writable` leaves the descriptor open until the process exits, so a reader such as ssh would
 * not see the end of the peer's data, and would wait for it while punchctl waits for ssh to
 * close stdin.
 *
 * A socket (Node's child process pipes are socket pairs) is shut down for writing. A pipe's
 * reader sees the end only once every descriptor of its write end is closed: fd 1 and the
 * duplicate Deno keeps of it; each is closed, and its number held by an unconnected socket so
 * that no later fd becomes "stdout". When stdout shares its pipe or terminal with stderr or
 * stdin, only fd 1 is closed (the reader sees the end when punchctl exits).
 */
export function endStdout(): void {
  const target = fdTarget(STDOUT_FD);
  if (target === null) return;
  if (target.startsWith("socket:")) {
    try {
      shutdown(STDOUT_FD, SHUT_WR);
    } catch {
      // Not connected, or already shut down: nothing to end.
    }
    return;
  }
  const fds = [STDOUT_FD];
  if (target !== fdTarget(0) && target !== fdTarget(2)) {
    for (let fd = 3; fd < 4096; fd++) {
      if (isOpen(fd) && fdTarget(fd) === target) fds.push(fd);
    }
  }
  for (const fd of fds) {
    closeFd(fd);
    const placeholder = openSocket(AF_UNIX, SOCK_DGRAM);
    if (placeholder !== fd) closeFd(placeholder);
  }
}

/**
 * Stdout as a WritableStream whose close ends it for the reader ({@linkcode endStdout}),
 * unlike `Deno.stdout.writable`.
 */
export function stdoutWritable(): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    write: async (chunk) => {
      for (let offset = 0; offset < chunk.byteLength;) {
        offset += await Deno.stdout.write(chunk.subarray(offset));
      }
    },
    close: () => endStdout(),
  });
}

/** How a stream join ended. */
export interface JoinResult {
  /** Bytes (TCP) or datagrams' bytes (UDP) sent to the peer. */
  sent: number;
  /** Bytes received from the peer and written to the output. */
  received: number;
  /** The peer had closed the connection entirely when input remained to send (TCP). */
  peerGone: boolean;
}

/** True for the errors of writing to a peer that closed (EPIPE, ECONNRESET). */
function isPeerGone(error: unknown): boolean {
  return error instanceof SyscallError && (error.code === "EPIPE" || error.code === "ECONNRESET");
}

/**
 * Joins a connected TCP socket to `input` and `output` (see the module doc);
 * closes `output` at the peer's end of stream. Does not close the socket.
 */
export async function joinStream(
  socket: Socket,
  input: ReadableStream<Uint8Array>,
  output: WritableStream<Uint8Array>,
): Promise<JoinResult> {
  const result: JoinResult = { sent: 0, received: 0, peerGone: false };
  const reader = input.getReader();
  const writer = output.getWriter();
  let peerEnded = false;
  const upstream = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      try {
        await socket.write(new Uint8Array(value));
        result.sent += value.byteLength;
      } catch (error) {
        if (peerEnded && isPeerGone(error)) {
          result.peerGone = true;
          await reader.cancel().catch(() => {});
          return;
        }
        throw error;
      }
    }
    try {
      socket.closeWrite();
    } catch (error) {
      // The peer may have reset an already finished connection.
      if (!(peerEnded && error instanceof SyscallError)) throw error;
    }
  })();
  const downstream = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await socket.read(buf);
      if (n === 0) break;
      await writer.write(buf.slice(0, n));
      result.received += n;
    }
    peerEnded = true;
    await writer.close();
  })();
  upstream.catch(() => {});
  downstream.catch(() => {});
  try {
    await Promise.all([upstream, downstream]);
  } catch (error) {
    await reader.cancel().catch(() => {});
    await writer.abort().catch(() => {});
    throw error;
  }
  return result;
}

/** True for a punch datagram that arrives after the connection was made. */
export function isPunchDatagram(bytes: Uint8Array): boolean {
  return new TextDecoder().decode(bytes.subarray(0, PUNCH_MAGIC.length)) === PUNCH_MAGIC;
}

/**
 * Joins a connected UDP socket to `input` and `output` (see the module doc);
 * ends when the input ends. Does not close the socket or the output.
 */
export async function joinDatagrams(
  socket: Socket,
  input: ReadableStream<Uint8Array>,
  output: WritableStream<Uint8Array>,
): Promise<JoinResult> {
  const result: JoinResult = { sent: 0, received: 0, peerGone: false };
  const writer = output.getWriter();
  const stop = new AbortController();
  const downstream = (async () => {
    const buf = new Uint8Array(65536);
    for (;;) {
      let n: number;
      try {
        n = await socket.read(buf, stop.signal);
      } catch (error) {
        if (stop.signal.aborted) return;
        // A refused datagram (ICMP port unreachable) is reported on the next call: not fatal.
        if (error instanceof SyscallError && error.code === "ECONNREFUSED") continue;
        throw error;
      }
      const datagram = buf.slice(0, n);
      if (n === 0 || isPunchDatagram(datagram)) continue;
      await writer.write(datagram);
      result.received += n;
    }
  })();
  downstream.catch(() => {});
  let failure: unknown = null;
  try {
    for await (const chunk of input) {
      for (let offset = 0; offset < chunk.byteLength; offset += 65507) {
        const part = new Uint8Array(chunk.subarray(offset, offset + 65507));
        try {
          await socket.write(part);
        } catch (error) {
          if (!(error instanceof SyscallError && error.code === "ECONNREFUSED")) throw error;
        }
        result.sent += part.byteLength;
      }
    }
  } catch (error) {
    failure = error;
  }
  stop.abort();
  try {
    await downstream;
  } catch (error) {
    failure ??= error;
  }
  writer.releaseLock();
  if (failure !== null) throw failure;
  return result;
}
