/**
 * Typed wrappers over the libc symbols: numbers, strings and Uint8Arrays in,
 * numbers and decoded structs out; every failure throws SyscallError with the
 * errno read on this thread right after the call. Calls on non-blocking fds
 * that would block return `null` instead of throwing.
 *
 * @module
 */

import {
  F_GETFD,
  F_GETFL,
  F_SETFL,
  FD_CLOEXEC,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_TRUNC,
  O_NONBLOCK,
  SO_ATTACH_FILTER,
  SO_ERROR,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOL_SOCKET,
} from "./constants.ts";
import { EAGAIN, EINPROGRESS, EINTR, SyscallError } from "./errno.ts";
import { cString, errno, groupId, libc, userId } from "./libc.ts";
import {
  type BpfInstruction,
  cmsg,
  cmsgSpace,
  decodeInt,
  decodeMsghdr,
  encodeInt,
  type LinkAddress,
  type PollFd,
  pollfd,
  rightsFds,
  rightsMessage,
  SCM_MAX_FD,
  sockaddr,
  SOCKADDR_STORAGE_SIZE,
  sockaddrLl,
  type SocketAddress,
  sockFilter,
  type Ucred,
  ucred,
  unsafeEncodeMsghdr,
  unsafeEncodeSockFprog,
} from "./structs.ts";

function fail(syscall: string): never {
  throw new SyscallError(syscall, errno());
}

function check(syscall: string, result: number): number {
  if (result < 0) fail(syscall);
  return result;
}

/** Runs `call` again while it fails with EINTR; returns the result and errno. */
function retry(call: () => number | bigint): { result: number; errno: number } {
  for (;;) {
    const result = Number(call());
    if (result >= 0) return { result, errno: 0 };
    const e = errno();
    if (e !== EINTR) return { result, errno: e };
  }
}

/** Socket-address out-parameter: a storage buffer and its socklen_t. */
function addressOut(): { buf: Uint8Array<ArrayBuffer>; len: Uint8Array<ArrayBuffer> } {
  return { buf: new Uint8Array(SOCKADDR_STORAGE_SIZE), len: encodeInt(SOCKADDR_STORAGE_SIZE) };
}

function readAddress(out: { buf: Uint8Array; len: Uint8Array }): SocketAddress {
  return sockaddr.decode(out.buf, Math.min(decodeInt(out.len), SOCKADDR_STORAGE_SIZE)).value;
}

/** socket(2), always non-blocking and close-on-exec. */
export function socket(domain: number, type: number, protocol = 0): number {
  return check("socket", libc().socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol));
}

/** socketpair(2), both ends non-blocking and close-on-exec. */
export function socketpair(domain: number, type: number): [number, number] {
  const sv = new Uint8Array(8);
  check("socketpair", libc().socketpair(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv));
  return [decodeInt(sv), decodeInt(sv.subarray(4))];
}

/** bind(2). */
export function bind(fd: number, address: SocketAddress): void {
  const buf = sockaddr.encode(address);
  check("bind", libc().bind(fd, buf, buf.byteLength));
}

/** listen(2). */
export function listen(fd: number, backlog: number): void {
  check("listen", libc().listen(fd, backlog));
}

/** accept4(2) with SOCK_NONBLOCK|SOCK_CLOEXEC; null when nothing is pending. */
export function accept(fd: number): { fd: number; address: SocketAddress } | null {
  const out = addressOut();
  const { result, errno: e } = retry(() =>
    libc().accept4(fd, out.buf, out.len, SOCK_NONBLOCK | SOCK_CLOEXEC)
  );
  if (result < 0) {
    if (e === EAGAIN) return null;
    throw new SyscallError("accept", e);
  }
  return { fd: result, address: readAddress(out) };
}

/**
 * connect(2) on a non-blocking socket: "connected" when it completed at once,
 * "in-progress" when the caller must wait for writability and then read
 * SO_ERROR (see {@linkcode socketError}).
 */
export function connect(fd: number, address: SocketAddress): "connected" | "in-progress" {
  const buf = sockaddr.encode(address);
  const { result, errno: e } = retry(() => libc().connect(fd, buf, buf.byteLength));
  if (result === 0) return "connected";
  if (e === EINPROGRESS || e === EAGAIN) return "in-progress";
  throw new SyscallError("connect", e);
}

/** close(2). EINTR is not retried (Linux has released the fd already). */
export function close(fd: number): void {
  check("close", libc().close(fd));
}

/** shutdown(2). */
export function shutdown(fd: number, how: number): void {
  check("shutdown", libc().shutdown(fd, how));
}

/** setsockopt(2) with a C int value. */
export function setIntOption(fd: number, level: number, name: number, value: number): void {
  const buf = encodeInt(value);
  check("setsockopt", libc().setsockopt(fd, level, name, buf, buf.byteLength));
}

/** setsockopt(2) with raw bytes (struct options). */
export function setOption(
  fd: number,
  level: number,
  name: number,
  value: Uint8Array<ArrayBuffer>,
): void {
  check("setsockopt", libc().setsockopt(fd, level, name, value, value.byteLength));
}

/** getsockopt(2) of a C int. */
export function getIntOption(fd: number, level: number, name: number): number {
  const buf = new Uint8Array(4);
  const len = encodeInt(4);
  check("getsockopt", libc().getsockopt(fd, level, name, buf, len));
  return decodeInt(buf);
}

/** The pending socket error (SO_ERROR), cleared by reading it; 0 when none. */
export function socketError(fd: number): number {
  return getIntOption(fd, SOL_SOCKET, SO_ERROR);
}

/** SO_PEERCRED of a connected unix socket. */
export function peerCredentials(fd: number): Ucred {
  const buf = new Uint8Array(ucred.encodedLength());
  const len = encodeInt(buf.byteLength);
  check("getsockopt", libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len));
  return ucred.decode(buf).value;
}

/** getsockname(2). */
export function localAddress(fd: number): SocketAddress {
  const out = addressOut();
  check("getsockname", libc().getsockname(fd, out.buf, out.len));
  return readAddress(out);
}

/** getpeername(2). */
export function peerAddress(fd: number): SocketAddress {
  const out = addressOut();
  check("getpeername", libc().getpeername(fd, out.buf, out.len));
  return readAddress(out);
}

/** send(2) without blocking or SIGPIPE; bytes sent, or null when it would block. */
export function send(fd: number, data: Uint8Array<ArrayBuffer>): number | null {
  const { result, errno: e } = retry(() =>
    libc().sendto(fd, data, BigInt(data.byteLength), MSG_DONTWAIT | MSG_NOSIGNAL, null, 0)
  );
  if (result >= 0) return result;
  if (e === EAGAIN) return null;
  throw new SyscallError("send", e);
}

/** recv(2) without blocking into `buf`; bytes read (0 at end of stream), or null when it would block. */
export function recv(fd: number, buf: Uint8Array<ArrayBuffer>, flags = 0): number | null {
  const { result, errno: e } = retry(() =>
    libc().recvfrom(fd, buf, BigInt(buf.byteLength), MSG_DONTWAIT | flags, null, null)
  );
  if (result >= 0) return result;
  if (e === EAGAIN) return null;
  throw new SyscallError("recv", e);
}

/** write(2) to a non-blocking fd; bytes written, or null when it would block. */
export function write(fd: number, data: Uint8Array<ArrayBuffer>): number | null {
  const { result, errno: e } = retry(() => libc().write(fd, data, BigInt(data.byteLength)));
  if (result >= 0) return result;
  if (e === EAGAIN) return null;
  throw new SyscallError("write", e);
}

/** sendto(2) of one datagram; bytes sent, or null when it would block. */
export function sendTo(
  fd: number,
  data: Uint8Array<ArrayBuffer>,
  to: SocketAddress,
): number | null {
  const addr = sockaddr.encode(to);
  const { result, errno: e } = retry(() =>
    libc().sendto(
      fd,
      data,
      BigInt(data.byteLength),
      MSG_DONTWAIT | MSG_NOSIGNAL,
      addr,
      addr.byteLength,
    )
  );
  if (result >= 0) return result;
  if (e === EAGAIN) return null;
  throw new SyscallError("sendto", e);
}

/** recvfrom(2) of one datagram; null when none is queued. */
export function recvFrom(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
): { length: number; from: SocketAddress } | null {
  const out = addressOut();
  const { result, errno: e } = retry(() =>
    libc().recvfrom(fd, buf, BigInt(buf.byteLength), MSG_DONTWAIT, out.buf, out.len)
  );
  if (result >= 0) {
    // A datagram from an unbound unix socket (sd_notify senders do that) has no address at all.
    if (decodeInt(out.len) === 0) return { length: result, from: { family: "unix", path: "" } };
    return { length: result, from: readAddress(out) };
  }
  if (e === EAGAIN) return null;
  throw new SyscallError("recvfrom", e);
}

/**
 * sendmsg(2) of `data` with `fds` as SCM_RIGHTS in the same message; bytes
 * sent, or null when it would block (nothing was sent then).
 */
export function sendMessage(
  fd: number,
  data: Uint8Array<ArrayBuffer>,
  fds: readonly number[] = [],
): number | null {
  const control = fds.length > 0 ? cmsg.encode([rightsMessage(fds)]) : null;
  const buffers = { name: null, iov: [data], control };
  const { msghdr, iovec } = unsafeEncodeMsghdr(buffers);
  const { result, errno: e } = retry(() => libc().sendmsg(fd, msghdr, MSG_DONTWAIT | MSG_NOSIGNAL));
  // Keep the pointed-to buffers reachable until after the call.
  void buffers;
  void iovec;
  if (result >= 0) return result;
  if (e === EAGAIN) return null;
  throw new SyscallError("sendmsg", e);
}

/** What recvmsg(2) delivered. */
export interface ReceivedMessage {
  /** Bytes read into the data buffer (0 at end of stream). */
  length: number;
  /** fds received with SCM_RIGHTS; the caller owns them (close-on-exec set). */
  fds: number[];
  /** True when the kernel dropped control data (more fds than room). */
  controlTruncated: boolean;
}

/** recvmsg(2) into `buf` with room for `maxFds` passed fds; null when it would block. */
export function receiveMessage(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
  maxFds = 8,
): ReceivedMessage | null {
  const control = new Uint8Array(cmsgSpace(4 * Math.min(Math.max(maxFds, 1), SCM_MAX_FD)));
  const buffers = { name: null, iov: [buf], control };
  const { msghdr, iovec } = unsafeEncodeMsghdr(buffers);
  const { result, errno: e } = retry(() =>
    libc().recvmsg(fd, msghdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)
  );
  void buffers;
  void iovec;
  if (result < 0) {
    if (e === EAGAIN) return null;
    throw new SyscallError("recvmsg", e);
  }
  const header = decodeMsghdr(msghdr).value;
  const fds = rightsFds(
    cmsg.decode(control, Math.min(header.controlLength, control.byteLength)).value,
  );
  return { length: result, fds, controlTruncated: (header.flags & MSG_CTRUNC) !== 0 };
}

/** bind(2) of a packet socket to a link-layer address. */
export function bindLink(fd: number, address: LinkAddress): void {
  const buf = sockaddrLl.encode(address);
  check("bind", libc().bind(fd, buf, buf.byteLength));
}

/** recvfrom(2) on a packet socket; null when nothing is queued. */
export function recvFromLink(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
): { length: number; from: LinkAddress } | null {
  const out = addressOut();
  const { result, errno: e } = retry(() =>
    libc().recvfrom(fd, buf, BigInt(buf.byteLength), MSG_DONTWAIT | MSG_TRUNC, out.buf, out.len)
  );
  if (result < 0) {
    if (e === EAGAIN) return null;
    throw new SyscallError("recvfrom", e);
  }
  return { length: Math.min(result, buf.byteLength), from: sockaddrLl.decode(out.buf).value };
}

/** SO_ATTACH_FILTER: a classic BPF program decides which packets the socket queues. */
export function attachFilter(fd: number, program: readonly BpfInstruction[]): void {
  const filter = sockFilter.encode(program);
  const fprog = unsafeEncodeSockFprog(filter);
  check("setsockopt", libc().setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, fprog.byteLength));
  void filter; // kept alive until after the call
}

/** Sets or clears O_NONBLOCK. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = check("fcntl", libc().fcntl(fd, F_GETFL, 0));
  check("fcntl", libc().fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK));
}

/** True when `fd` has close-on-exec set (fcntl F_GETFD, FD_CLOEXEC). */
export function closeOnExec(fd: number): boolean {
  return (check("fcntl", libc().fcntl(fd, F_GETFD, 0)) & FD_CLOEXEC) !== 0;
}

/** True when `fd` is an open descriptor in this process. */
export function isOpen(fd: number): boolean {
  return libc().fcntl(fd, F_GETFL, 0) >= 0;
}

/** poll(2) with timeout 0: the current readiness of each entry, never waits. */
export function pollNow(entries: readonly Omit<PollFd, "revents">[]): PollFd[] {
  const buf = pollfd.encode(entries.map((e) => ({ ...e, revents: 0 })));
  check("poll", libc().poll(buf, BigInt(entries.length), 0));
  return pollfd.decode(buf).value;
}

/**
 * Reads a whole file through open(2)/read(2): for kernel files Deno's own
 * API refuses without --allow-all, such as /proc/net/tcp.
 */
export function readFileRaw(path: string): Uint8Array {
  const O_RDONLY_CLOEXEC = 0o2000000;
  const fd = check("open", libc().open(cString(path), O_RDONLY_CLOEXEC, 0));
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const buf = new Uint8Array(65536);
      const { result, errno: e } = retry(() => libc().read(fd, buf, BigInt(buf.byteLength)));
      if (result < 0) throw new SyscallError("read", e);
      if (result === 0) break;
      chunks.push(buf.subarray(0, result));
      total += result;
    }
    const out = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) {
      out.set(c, offset);
      offset += c.byteLength;
    }
    return out;
  } finally {
    libc().close(fd);
  }
}

/**
 * Opens (creating it mode 0600, never through a symlink) and locks `path`
 * with flock(LOCK_EX | LOCK_NB); returns the fd, which holds the lock until
 * it is closed or the process dies. Throws SyscallError (EAGAIN: another
 * process holds the lock).
 */
export function lockFile(path: string): number {
  const O_RDWR = 0o2, O_CREAT = 0o100, O_NOFOLLOW = 0o400000, O_CLOEXEC = 0o2000000;
  const LOCK_EX = 2, LOCK_NB = 4;
  const flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
  const fd = check("open", libc().open(cString(path), flags, 0o600));
  if (libc().flock(fd, LOCK_EX | LOCK_NB) < 0) {
    const e = errno();
    libc().close(fd);
    throw new SyscallError("flock", e);
  }
  return fd;
}

/** readlink(2): the target of a symlink (such as /proc/self/ns/net). */
export function readLink(path: string): string {
  const buf = new Uint8Array(4096);
  const n = Number(
    check("readlink", Number(libc().readlink(cString(path), buf, BigInt(buf.length)))),
  );
  return new TextDecoder().decode(buf.subarray(0, n));
}

/**
 * getenv(3): a variable of the environment the process started with, without Deno's env
 * permission (the daemon reads only what its service manager sets: NOTIFY_SOCKET,
 * JOURNAL_STREAM). Undefined when unset.
 */
export function getEnv(name: string): string | undefined {
  const pointer = libc().getenv(cString(name));
  return pointer === null ? undefined : Deno.UnsafePointerView.getCString(pointer).slice(0, 4096);
}

/**
 * capget(2): this thread's effective capability set (64 bits, version 3 of
 * the interface). Deno refuses /proc/self/status to all but --allow-all.
 */
export function effectiveCapabilitySet(): bigint {
  const header = new Uint8Array(8);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, 0x20080522, true); // _LINUX_CAPABILITY_VERSION_3
  hv.setInt32(4, 0, true); // this thread
  // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
  const data = new Uint8Array(24);
  check("capget", libc().capget(header, data));
  const dv = new DataView(data.buffer);
  return (BigInt(dv.getUint32(12, true)) << 32n) | BigInt(dv.getUint32(0, true));
}

/** unlink(2); false when the path did not exist. */
export function unlink(path: string): boolean {
  if (libc().unlink(cString(path)) === 0) return true;
  const e = errno();
  if (e === 2) return false;
  throw new SyscallError("unlink", e);
}

/** lchown(2): changes the owner of `path` itself, never of a symlink's target; -1 leaves an id unchanged. */
export function lchown(path: string, uid: number, gid: number): void {
  check("lchown", libc().lchown(cString(path), uid >>> 0, gid >>> 0));
}

/** mkdir(2) with `mode` (less the umask); false when the path exists already. */
export function mkdir(path: string, mode: number): boolean {
  if (libc().mkdir(cString(path), mode) === 0) return true;
  const e = errno();
  if (e === 17) return false;
  throw new SyscallError("mkdir", e);
}

/** geteuid(2): the uid this process acts as (needs no Deno permission, unlike Deno.uid()). */
export function effectiveUid(): number {
  return libc().geteuid();
}

/** mallopt(3) M_ARENA_MAX. */
const M_ARENA_MAX = -8;

/**
 * mallopt(M_ARENA_MAX, `arenas`): threads made from now on share at most `arenas` malloc arenas
 * (glibc's default is eight per core, and an arena stays after its thread ends, with whatever
 * fragments it holds). True when glibc took it.
 */
export function limitArenas(arenas: number): boolean {
  return libc().mallopt(M_ARENA_MAX, arenas) === 1;
}

/** malloc_trim(3): returns the C heap's free memory to the kernel; true when some was. */
export function trimHeap(): boolean {
  return libc().malloc_trim(0n) === 1;
}

/** umask(2); returns the previous mask. */
export function umask(mask: number): number {
  return libc().umask(mask);
}

/** The gid of a group name, or undefined when there is no such group. */
export function lookupGroup(name: string): number | undefined {
  return groupId(name);
}

/** The uid of a user by name (getpwnam(3)); undefined when there is none. */
export function lookupUser(name: string): number | undefined {
  return userId(name);
}

/** The fds open in process `pid` (default: this one), from /proc/PID/fd. */
export function openFds(pid: number = Deno.pid): number[] {
  const fds: number[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) fds.push(Number(entry.name));
  return fds.sort((a, b) => a - b);
}
