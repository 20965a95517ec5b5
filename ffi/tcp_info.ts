/**
 * getsockopt(TCP_INFO): what the kernel knows of a TCP connection (the
 * numbers `ss -ti` prints), for comparing a repaired socket with one the
 * kernel negotiated itself.
 *
 * @module
 */

import {
  IPPROTO_TCP,
  TCP_INFO,
  TCPI_OPT_SACK,
  TCPI_OPT_TIMESTAMPS,
  TCPI_OPT_WSCALE,
} from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import type { Socket } from "./socket.ts";

/** The fields of struct tcp_info (linux/tcp.h) punchd looks at; times in microseconds. */
export interface TcpInfo {
  /** tcpi_state (include/net/tcp_states.h: 1 ESTABLISHED). */
  state: number;
  /** tcpi_options: TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE, ... */
  options: number;
  /** Timestamps, SACK and window scaling as negotiated (from `options`). */
  timestamps: boolean;
  sack: boolean;
  /** The shifts, when window scaling was negotiated (else 0): the peer's (snd) and ours (rcv). */
  sndWscale: number;
  rcvWscale: number;
  /** tcpi_rto (µs). */
  rto: number;
  /** tcpi_snd_mss: the payload of a full segment this side sends (after options). */
  sndMss: number;
  /** tcpi_rcv_mss: this side's estimate of the peer's full segment. */
  rcvMss: number;
  /** tcpi_pmtu. */
  pmtu: number;
  /** tcpi_rtt and tcpi_rttvar: the smoothed RTT and its variation (µs). */
  rtt: number;
  rttvar: number;
  /** tcpi_snd_cwnd (segments). */
  sndCwnd: number;
  /** tcpi_advmss: the MSS this side advertises. */
  advmss: number;
  /** tcpi_rcv_space: the receive buffer autotuning's current space (bytes). */
  rcvSpace: number;
  /** tcpi_min_rtt (µs), 0 when the kernel reports none. */
  minRtt: number;
  /** tcpi_bytes_acked and tcpi_bytes_received. */
  bytesAcked: number;
  bytesReceived: number;
  /** tcpi_snd_wnd: the peer's advertised window after scaling (bytes; 0 on kernels before 5.4). */
  sndWnd: number;
}

/** Bytes of struct tcp_info up to and including tcpi_snd_wnd (Linux 5.4). */
const TCP_INFO_LENGTH = 232;

/** Decodes struct tcp_info from `buf` (`length` bytes filled by the kernel). */
export function decodeTcpInfo(buf: Uint8Array, length: number): TcpInfo {
  if (length < 104) throw new RangeError(`Cannot decode tcp_info: ${length} bytes`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const u8 = (offset: number) => view.getUint8(offset);
  const u32 = (offset: number) => offset + 4 <= length ? view.getUint32(offset, true) : 0;
  const u64 = (offset: number) =>
    offset + 8 <= length ? Number(view.getBigUint64(offset, true)) : 0;
  const options = u8(5);
  const wscale = u8(6);
  return {
    state: u8(0),
    options,
    timestamps: (options & TCPI_OPT_TIMESTAMPS) !== 0,
    sack: (options & TCPI_OPT_SACK) !== 0,
    sndWscale: options & TCPI_OPT_WSCALE ? wscale & 0xf : 0,
    rcvWscale: options & TCPI_OPT_WSCALE ? wscale >> 4 : 0,
    rto: u32(8),
    sndMss: u32(16),
    rcvMss: u32(20),
    pmtu: u32(60),
    rtt: u32(68),
    rttvar: u32(72),
    sndCwnd: u32(80),
    advmss: u32(84),
    rcvSpace: u32(96),
    minRtt: u32(148),
    bytesAcked: u64(120),
    bytesReceived: u64(128),
    sndWnd: u32(228),
  };
}

/** getsockopt(fd, IPPROTO_TCP, TCP_INFO) of `socket`, decoded. */
export function tcpInfo(socket: Socket): TcpInfo {
  const buf = new Uint8Array(TCP_INFO_LENGTH);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, buf.byteLength, true);
  if (libc().getsockopt(socket.fd, IPPROTO_TCP, TCP_INFO, buf, len) < 0) {
    throw new SyscallError("getsockopt", errno());
  }
  return decodeTcpInfo(buf, new DataView(len.buffer).getUint32(0, true));
}
