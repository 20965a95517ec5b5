/**
 * A socket's error queue (IP_RECVERR / IPV6_RECVERR, recvmsg with
 * MSG_ERRQUEUE): each ICMP error a datagram provoked, with the address of
 * the router that sent it (SO_EE_OFFENDER), without raw sockets or
 * privileges. Hop discovery uses it for TTL-limited probes.
 *
 * ```
 *  struct sock_extended_err {     offset
 *    __u32 ee_errno;                0
 *    __u8  ee_origin;               4   SO_EE_ORIGIN_*
 *    __u8  ee_type;                 5   ICMP type
 *    __u8  ee_code;                 6   ICMP code
 *    __u8  ee_pad;                  7
 *    __u32 ee_info;                 8
 *    __u32 ee_data;                12
 *  };                              16   then the offender's sockaddr (AF_UNSPEC when none)
 * ```
 *
 * @module
 */

import {
  IPPROTO_IP,
  IPPROTO_IPV6,
  MSG_DONTWAIT,
  MSG_TRUNC,
  SO_ERROR,
  SOL_SOCKET,
} from "./constants.ts";
import { EAGAIN, EINTR, SyscallError } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import type { Socket } from "./socket.ts";
import {
  cmsg,
  decodeMsghdr,
  sockaddr,
  SOCKADDR_STORAGE_SIZE,
  type SocketAddress,
  unsafeEncodeMsghdr,
} from "./structs.ts";

/** setsockopt(IPPROTO_IP): queue extended errors (linux/in.h). */
export const IP_RECVERR = 11;
/** setsockopt(IPPROTO_IPV6): queue extended errors (linux/in6.h). */
export const IPV6_RECVERR = 25;
/** recvmsg flag: read from the error queue. */
export const MSG_ERRQUEUE = 0x2000;
/** ee_origin values (linux/errqueue.h). */
export const SO_EE_ORIGIN_LOCAL = 1;
export const SO_EE_ORIGIN_ICMP = 2;
export const SO_EE_ORIGIN_ICMP6 = 3;
/** sizeof(struct sock_extended_err). */
export const SOCK_EXTENDED_ERR_SIZE = 16;

/** One decoded struct sock_extended_err plus its offender. */
export interface ExtendedError {
  /** ee_errno, e.g. EHOSTUNREACH (113) for a time-exceeded. */
  errno: number;
  /** Where the error came from. */
  origin: "local" | "icmp" | "icmp6" | "other";
  /** The ICMP (or ICMPv6) type and code. */
  type: number;
  code: number;
  info: number;
  /** The address of the node that sent the ICMP error, when the kernel knows it. */
  offender: string | null;
}

/** One error read from the queue. */
export interface QueuedError extends ExtendedError {
  /** The original datagram's destination (msg_name), when given. */
  destination: SocketAddress | null;
  /** The start of the original datagram's payload (what the ICMP error quoted). */
  payload: Uint8Array;
}

/** Decodes a sock_extended_err control message's data; throws RangeError when short. */
export function decodeExtendedError(data: Uint8Array): ExtendedError {
  if (data.byteLength < SOCK_EXTENDED_ERR_SIZE) {
    throw new RangeError(
      `Cannot decode sock_extended_err: ${data.byteLength} bytes, need ${SOCK_EXTENDED_ERR_SIZE}`,
    );
  }
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const origin = data[4];
  let offender: string | null = null;
  const rest = data.subarray(SOCK_EXTENDED_ERR_SIZE);
  if (rest.byteLength >= 2 && dv.getUint16(SOCK_EXTENDED_ERR_SIZE, true) !== 0) {
    try {
      const address = sockaddr.decode(rest).value;
      if (address.family !== "unix") offender = address.address;
    } catch {
      offender = null; // an offender of another family or a short one: unknown
    }
  }
  return {
    errno: dv.getUint32(0, true),
    origin: origin === SO_EE_ORIGIN_LOCAL
      ? "local"
      : origin === SO_EE_ORIGIN_ICMP
      ? "icmp"
      : origin === SO_EE_ORIGIN_ICMP6
      ? "icmp6"
      : "other",
    type: data[5] ?? 0,
    code: data[6] ?? 0,
    info: dv.getUint32(8, true),
    offender,
  };
}

/** Turns on IP_RECVERR (and IPV6_RECVERR on an IPv6 socket): ICMP errors queue with their offender. */
export function enableErrorQueue(socket: Socket): void {
  if (socket.localAddress().family === "inet6") socket.setOption(IPPROTO_IPV6, IPV6_RECVERR, 1);
  else socket.setOption(IPPROTO_IP, IP_RECVERR, 1);
}

/** Reads one queued error without waiting; null when the queue is empty. */
export function readErrorQueue(socket: Socket, maxPayload = 64): QueuedError | null {
  const fd = socket.fd;
  if (fd < 0) throw new SyscallError("recvmsg", 9);
  const name = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  const payload = new Uint8Array(Math.max(1, maxPayload));
  const control = new Uint8Array(512);
  const buffers = { name, iov: [payload], control };
  const { msghdr, iovec } = unsafeEncodeMsghdr(buffers);
  let result: number;
  for (;;) {
    result = Number(libc().recvmsg(fd, msghdr, MSG_ERRQUEUE | MSG_DONTWAIT));
    if (result >= 0) break;
    const e = errno();
    if (e === EAGAIN) return null;
    if (e !== EINTR) throw new SyscallError("recvmsg", e);
  }
  void buffers;
  void iovec;
  const header = decodeMsghdr(msghdr).value;
  const messages = cmsg.decode(control, Math.min(header.controlLength, control.byteLength)).value;
  const found = messages.find((m) =>
    (m.level === IPPROTO_IP && m.type === IP_RECVERR) ||
    (m.level === IPPROTO_IPV6 && m.type === IPV6_RECVERR)
  );
  if (found === undefined) return null;
  let destination: SocketAddress | null = null;
  if (header.nameLength >= 2) {
    try {
      destination = sockaddr.decode(name, Math.min(header.nameLength, name.byteLength)).value;
    } catch {
      destination = null;
    }
  }
  return {
    ...decodeExtendedError(found.data),
    destination,
    payload: payload.slice(0, Math.min(result, payload.byteLength)),
  };
}

/**
 * Waits for the next queued error. Datagrams that arrive meanwhile are
 * discarded, and a pending socket error is cleared (SO_ERROR), so a wake-up
 * that brings no queued error cannot spin. Rejects with the signal's reason.
 */
export async function nextQueuedError(
  socket: Socket,
  signal: AbortSignal,
  maxPayload = 64,
): Promise<QueuedError> {
  const scratch = new Uint8Array(1);
  for (;;) {
    const queued = readErrorQueue(socket, maxPayload);
    if (queued !== null) return queued;
    // At most a bounded number of stray datagrams per wake-up.
    for (let i = 0; i < 64; i++) {
      const n = Number(
        libc().recvfrom(socket.fd, scratch, 1n, MSG_DONTWAIT | MSG_TRUNC, null, null),
      );
      if (n < 0) break;
    }
    socket.getOption(SOL_SOCKET, SO_ERROR);
    await socket.readable(signal);
  }
}
