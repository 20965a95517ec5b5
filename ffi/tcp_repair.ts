/**
 * Building an established TCP socket with TCP_REPAIR (CAP_NET_ADMIN): the
 * caller decides both sequence numbers and the negotiated options, as if the
 * handshake had happened in the kernel.
 *
 * @module
 */

import {
  IPPROTO_TCP,
  TCP_MAXSEG,
  TCP_QUEUE_SEQ,
  TCP_RECV_QUEUE,
  TCP_REPAIR,
  TCP_REPAIR_OPTIONS,
  TCP_REPAIR_QUEUE,
  TCP_REPAIR_WINDOW,
  TCP_SEND_QUEUE,
  TCP_TIMESTAMP,
} from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { Socket } from "./socket.ts";
import {
  type InetAddress,
  type TcpRepairOption,
  tcpRepairOptions,
  type TcpRepairWindow,
  tcpRepairWindow,
} from "./structs.ts";
import * as sys from "./syscalls.ts";
import { errno, libc } from "./libc.ts";

/** TCP option codes for TCP_REPAIR_OPTIONS (the TCPOPT_* kinds). */
export const REPAIR_OPTION = { MSS: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 } as const;

/** Leaves repair mode without the window probe the kernel would otherwise send. */
const TCP_REPAIR_OFF_NO_WP = -1;

/** What a repaired connection is built from. */
export interface RepairedConnection {
  local: InetAddress;
  remote: InetAddress;
  /** The next sequence number this side sends (its ISN + 1). */
  sendSeq: number;
  /** The next sequence number it expects (the peer's ISN + 1). */
  recvSeq: number;
  /** The peer's MSS. */
  mss: number;
  /**
   * The MSS this side advertises, as the kernel shows it once the handshake
   * is done (tcpi_advmss): the SYN's MSS option, minus the timestamp
   * option's 12 bytes when timestamps are on. Default: the route's, as if
   * timestamps were off.
   */
  advertisedMss?: number;
  /** Window scaling when both sides offered it: the peer's shift and ours. */
  windowScale?: { send: number; receive: number };
  sackPermitted: boolean;
  /**
   * Timestamps when both sides offered them: the value this side's TCP
   * timestamp clock shows now, in milliseconds (the kernel's unit); the
   * socket's TSvals count on from it. See {@linkcode timestampOption}.
   */
  timestamp?: number;
  /** The peer's advertised (unscaled, as in its SYN) window. */
  peerWindow: number;
}

/**
 * The value to give TCP_TIMESTAMP for a millisecond clock that shows
 * `value` now. The kernel makes it the socket's current TSval (it stores the
 * offset to its own clock). Since Linux 6.7 the lowest bit selects the
 * clock's unit: set, the socket's timestamps tick in microseconds (1000
 * times too fast for a peer that saw milliseconds so far, and wrapping
 * after 71 minutes). So the bit is cleared, rounding up (never back in time
 * against what the peer saw); older kernels read it as part of the value,
 * where that is one millisecond ahead.
 */
export function timestampOption(value: number): number {
  return (((value >>> 0) + 1) & ~1) >>> 0;
}

function setBytes(fd: number, name: number, value: Uint8Array<ArrayBuffer>): void {
  if (libc().setsockopt(fd, IPPROTO_TCP, name, value, value.byteLength) < 0) {
    throw new SyscallError("setsockopt", errno());
  }
}

function getWindow(fd: number): TcpRepairWindow {
  const buf = new Uint8Array(tcpRepairWindow.encodedLength());
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, buf.byteLength, true);
  if (libc().getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, buf, len) < 0) {
    throw new SyscallError("getsockopt", errno());
  }
  return tcpRepairWindow.decode(buf).value;
}

/**
 * An established socket for `c`, built in repair mode and then switched to
 * normal operation without sending anything. Returns the socket and the
 * receive window it will advertise (to put in the SYN-ACK).
 */
export function repairConnect(c: RepairedConnection): { socket: Socket; receiveWindow: number } {
  const socket = Socket.create(c.local.family, "stream", { reuseAddress: true, reusePort: true });
  try {
    const fd = socket.fd;
    sys.setIntOption(fd, IPPROTO_TCP, TCP_REPAIR, 1);
    // connect() takes the advertised MSS from the route, clamped to TCP_MAXSEG.
    if (c.advertisedMss !== undefined) {
      sys.setIntOption(fd, IPPROTO_TCP, TCP_MAXSEG, c.advertisedMss);
    }
    socket.bind(c.local);
    sys.setIntOption(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    sys.setIntOption(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, c.sendSeq | 0);
    sys.setIntOption(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
    sys.setIntOption(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, c.recvSeq | 0);
    // connect() guesses the peer's segment size (rcv_mss, for delayed ACKs) from half the receive
    // window before it chooses that window: a window now makes the guess the kernel's own 536
    // rather than the 88-byte floor. connect() then sets every window anew (set again below).
    setBytes(
      fd,
      TCP_REPAIR_WINDOW,
      tcpRepairWindow.encode({
        sndWl1: c.recvSeq >>> 0,
        sndWnd: 0,
        maxWindow: 0,
        rcvWnd: 65535,
        rcvWup: c.recvSeq >>> 0,
      }),
    );
    // In repair mode connect() sends nothing and goes straight to ESTABLISHED.
    if (sys.connect(fd, c.remote) !== "connected") {
      throw new Error("Cannot repair a connection: connect did not complete at once");
    }
    const options: TcpRepairOption[] = [{ code: REPAIR_OPTION.MSS, value: c.mss }];
    if (c.windowScale) {
      options.push({
        code: REPAIR_OPTION.WINDOW,
        value: c.windowScale.send | (c.windowScale.receive << 16),
      });
    }
    if (c.sackPermitted) options.push({ code: REPAIR_OPTION.SACK_PERM, value: 0 });
    if (c.timestamp !== undefined) options.push({ code: REPAIR_OPTION.TIMESTAMP, value: 0 });
    setBytes(fd, TCP_REPAIR_OPTIONS, tcpRepairOptions.encode(options));
    if (c.timestamp !== undefined) {
      sys.setIntOption(fd, IPPROTO_TCP, TCP_TIMESTAMP, timestampOption(c.timestamp) | 0);
    }
    const window = getWindow(fd);
    const receiveWindow = Math.min(window.rcvWnd, 65535);
    setBytes(
      fd,
      TCP_REPAIR_WINDOW,
      tcpRepairWindow.encode({
        sndWl1: c.recvSeq >>> 0,
        sndWnd: c.peerWindow,
        maxWindow: Math.max(window.maxWindow, c.peerWindow),
        rcvWnd: receiveWindow,
        rcvWup: c.recvSeq >>> 0,
      }),
    );
    try {
      sys.setIntOption(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
    } catch {
      sys.setIntOption(fd, IPPROTO_TCP, TCP_REPAIR, 0); // kernels before 4.19
    }
    return { socket, receiveWindow };
  } catch (error) {
    socket.close();
    throw error;
  }
}
