/**
 * The options this host's kernel puts in the SYN of a connection from one
 * address to another, and the window it offers, learnt from the kernel
 * itself: a probe socket in TCP_REPAIR mode connects (which sends nothing
 * but runs the kernel's own connection setup, tcp_connect_init) and is
 * then dropped silently. For sockets built with TCP_REPAIR that must
 * carry what the kernel would have negotiated (tcp-syni's responder).
 *
 * - MSS: the route's advertised MSS (its MTU minus the IP and TCP headers,
 *   or its `advmss` metric), which the probe reports as tcpi_advmss.
 * - Window scale: tcp_select_initial_window picks the shift that lets the
 *   largest receive buffer the socket may grow to be advertised:
 *   ilog2(max(net.ipv4.tcp_rmem[2], net.core.rmem_max)) - 15, between 0
 *   and 14 (the same as the older kernels' loop that halves the space until
 *   it fits in 16 bits). A route's `window` metric, which would lower it,
 *   is not looked at.
 * - SACK, timestamps, window scaling at all: net.ipv4.tcp_sack,
 *   tcp_timestamps and tcp_window_scaling of the namespace.
 *
 * @module
 */

import { IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_WINDOW } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import { Socket } from "./socket.ts";
import { type InetAddress, tcpRepairWindow } from "./structs.ts";
import * as sys from "./syscalls.ts";
import { tcpInfo } from "./tcp_info.ts";

/** What the kernel offers in a SYN from `local` to `remote`. */
export interface KernelSynOptions {
  /** The MSS option (before the timestamp option's 12 bytes come off). */
  mss: number;
  /** The window scale option's shift; absent when net.ipv4.tcp_window_scaling is 0. */
  windowScale?: number;
  /** SACK permitted offered (net.ipv4.tcp_sack). */
  sackPermitted: boolean;
  /** Timestamps offered (net.ipv4.tcp_timestamps). */
  timestamps: boolean;
  /** The initial receive window (unscaled, at most 65535), as in the SYN's window field. */
  window: number;
}

/**
 * A sysctl of this namespace (`net/ipv4/tcp_rmem`) as its numbers;
 * `fallback` when unreadable or not numbers.
 */
function sysctl(name: string, fallback: number[]): number[] {
  try {
    const text = new TextDecoder().decode(sys.readFileRaw(`/proc/sys/${name}`)).trim();
    const values = text.split(/\s+/);
    return values.every((v) => /^\d+$/.test(v)) ? values.map(Number) : fallback;
  } catch {
    return fallback;
  }
}

/**
 * The receive window scale shift Linux offers when a socket's receive
 * buffer may grow to `space` bytes (tcp_select_initial_window).
 */
export function windowScaleFor(space: number): number {
  if (!Number.isInteger(space) || space < 0) throw new RangeError(`receive space ${space}`);
  return Math.min(14, Math.max(0, Math.floor(Math.log2(Math.max(space, 1))) - 15));
}

/**
 * The SYN options this host's kernel would offer for a connection from
 * `local`'s address to `remote`. Needs CAP_NET_ADMIN (TCP_REPAIR); sends
 * nothing.
 */
export function kernelSynOptions(local: InetAddress, remote: InetAddress): KernelSynOptions {
  using probe = Socket.create(local.family, "stream");
  probe.setOption(IPPROTO_TCP, TCP_REPAIR, 1);
  probe.bind({ ...local, port: 0 });
  if (sys.connect(probe.fd, remote) !== "connected") {
    throw new Error(
      "Cannot probe the kernel's SYN options: a repair-mode connect did not complete",
    );
  }
  const info = tcpInfo(probe);
  const buf = new Uint8Array(tcpRepairWindow.encodedLength());
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, buf.byteLength, true);
  if (libc().getsockopt(probe.fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, buf, len) < 0) {
    throw new SyscallError("getsockopt", errno());
  }
  const window = Math.min(tcpRepairWindow.decode(buf).value.rcvWnd, 65535);
  // Still in repair mode: close() drops the probe without a packet.
  const on = (name: string) => (sysctl(`net/ipv4/${name}`, [1])[0] ?? 1) !== 0;
  const space = Math.max(
    sysctl("net/ipv4/tcp_rmem", [4096, 131072, 6291456])[2] ?? 0,
    sysctl("net/core/rmem_max", [212992])[0] ?? 0,
  );
  return {
    mss: info.advmss,
    ...(on("tcp_window_scaling") ? { windowScale: windowScaleFor(space) } : {}),
    sackPermitted: on("tcp_sack"),
    timestamps: on("tcp_timestamps"),
    window,
  };
}
