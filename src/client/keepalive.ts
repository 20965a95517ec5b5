/**
 * Keeps a handed-over UDP path alive: NATs forget an idle UDP mapping
 * (RFC 4787 asks for at least 2 minutes, many keep it 30 s, Linux conntrack
 * 30 s for a flow that carried little), after which the peers' datagrams are
 * dropped. {@linkcode keepUdpAlive} sends punchd's keepalive datagram, an
 * empty one, on the connected socket at a fixed interval.
 *
 * An empty UDP datagram is the one message that needs no agreement between
 * the peers: it has no payload to parse, the receiver's `read` returns 0
 * bytes (a datagram socket has no end of stream, so 0 means only "an empty
 * datagram"), and protocols over UDP discard it (DTLS, QUIC, RTP and DNS all
 * need a header of several bytes). An application reading the socket itself
 * skips reads of 0 bytes.
 *
 * ```ts
 * const socket = await attempt.socket; // technique "udp"
 * using _keepalive = keepUdpAlive(socket); // an empty datagram every 15 s
 * ```
 *
 * Depends only on `ffi/`.
 *
 * @module
 */

import { SO_TYPE, SOCK_DGRAM, SOL_SOCKET } from "../../ffi/constants.ts";
import { send } from "../../ffi/syscalls.ts";
import type { Socket } from "../../ffi/socket.ts";

/** punchd's UDP keepalive datagram: no payload at all. */
export const UDP_KEEPALIVE_DATAGRAM: Uint8Array<ArrayBuffer> = new Uint8Array(0);

/**
 * The default interval, 15 s: half of the 30 s many NATs keep an idle UDP
 * mapping (Linux conntrack's `nf_conntrack_udp_timeout`), so one lost
 * keepalive does not lose the path, and far below RFC 4787's 2 minutes.
 */
export const DEFAULT_UDP_KEEPALIVE_MS = 15000;

/** Options of {@linkcode keepUdpAlive}. */
export interface KeepUdpAliveOptions {
  /**
   * Called with each failed send (e.g. ECONNREFUSED after the peer's host
   * answered with ICMP port unreachable); sending goes on. Default: ignore.
   */
  onError?: (error: Error) => void;
}

/** A running keepalive; `stop()` and disposing are the same and idempotent. */
export interface UdpKeepalive extends Disposable {
  /** Stops sending. */
  stop(): void;
  /** Keepalive datagrams sent so far. */
  readonly sent: number;
  /** True until stopped, or until the socket was found closed (then nothing is sent on its old fd number). */
  readonly active: boolean;
}

/**
 * Sends {@linkcode UDP_KEEPALIVE_DATAGRAM} on the connected UDP `socket`
 * every `intervalMs` until stopped or until the socket is closed. The timer
 * does not keep the process alive. Both peers should run one: a NAT must
 * refresh a mapping on outbound traffic (RFC 4787 REQ-6) but need not on
 * inbound, so each side keeps its own NAT's mapping.
 *
 * Throws RangeError for an interval outside 1 ms to 2^31-1 ms and TypeError
 * for a socket that is not a connected datagram socket.
 */
export function keepUdpAlive(
  socket: Socket,
  intervalMs: number = DEFAULT_UDP_KEEPALIVE_MS,
  options: KeepUdpAliveOptions = {},
): UdpKeepalive {
  if (!Number.isInteger(intervalMs) || intervalMs < 1 || intervalMs > 0x7fffffff) {
    throw new RangeError(
      `Cannot keep a UDP path alive: interval must be 1 to ${0x7fffffff} ms, got ${intervalMs}`,
    );
  }
  if (socket.getOption(SOL_SOCKET, SO_TYPE) !== SOCK_DGRAM) {
    throw new TypeError("Cannot keep a UDP path alive: the socket is not a datagram socket");
  }
  try {
    socket.peerAddress();
  } catch (error) {
    throw new TypeError("Cannot keep a UDP path alive: the socket is not connected", {
      cause: error,
    });
  }
  let sent = 0;
  const tick = () => {
    if (!socket.isOpen) {
      stop();
      return;
    }
    try {
      // null: the send buffer is full, so the path is not idle; skip this round.
      if (send(socket.fd, UDP_KEEPALIVE_DATAGRAM) !== null) sent++;
    } catch (error) {
      options.onError?.(error as Error);
    }
  };
  const timer = setInterval(tick, intervalMs);
  Deno.unrefTimer(timer);
  let running = true;
  function stop(): void {
    if (!running) return;
    running = false;
    clearInterval(timer);
  }
  return {
    stop,
    [Symbol.dispose]: stop,
    get sent() {
      return sent;
    },
    get active() {
      return running;
    },
  };
}
