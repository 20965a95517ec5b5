/**
 * Codecs for the C structs punchd passes to libc (Linux, LP64, little or big
 * endian as the host): sockaddr_in, sockaddr_in6, sockaddr_un, iovec/msghdr,
 * cmsghdr (SCM_RIGHTS), pollfd, ucred and epoll_event.
 *
 * Each codec has `encode`, `decode` (value and bytes read) and
 * `encodedLength`; decoders check every length against the buffer. Functions
 * that write raw pointers into a struct carry the `unsafe` prefix: the caller
 * must keep the pointed-to buffers alive for the duration of the call.
 *
 * @module
 */

import { AF_INET, AF_INET6, AF_UNIX, SCM_RIGHTS, SOL_SOCKET } from "./constants.ts";
import { formatIp, parseIp } from "./ip.ts";

/** The result of a decoder: the value and how many bytes it consumed. */
export interface Decoded<T> {
  value: T;
  bytesRead: number;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function need(buf: Uint8Array, length: number, what: string): void {
  if (buf.byteLength < length) {
    throw new RangeError(`Cannot decode ${what}: need ${length} bytes, have ${buf.byteLength}`);
  }
}

// ---------------------------------------------------------------------------
// Socket addresses

/** An IPv4 or IPv6 endpoint. */
export interface InetAddress {
  family: "inet" | "inet6";
  /** Canonical address text. */
  address: string;
  port: number;
  /** IPv6 scope (interface index); 0 when absent. */
  scopeId?: number;
}

/**
 * A unix domain socket path. An empty path is an unnamed socket. `abstract`: a name in the
 * abstract namespace (Linux: sun_path starts with a NUL; systemd's `@` NOTIFY_SOCKET).
 */
export interface UnixAddress {
  family: "unix";
  path: string;
  abstract?: boolean;
}

/** Any socket address punchd uses. */
export type SocketAddress = InetAddress | UnixAddress;

/** sizeof(struct sockaddr_in). */
export const SOCKADDR_IN_SIZE = 16;
/** sizeof(struct sockaddr_in6). */
export const SOCKADDR_IN6_SIZE = 28;
/** sizeof(struct sockaddr_un). */
export const SOCKADDR_UN_SIZE = 110;
/** sizeof(struct sockaddr_storage): enough for any address. */
export const SOCKADDR_STORAGE_SIZE = 128;
const SUN_PATH_MAX = SOCKADDR_UN_SIZE - 2 - 1; // room for the terminating NUL

/** An endpoint from address text and port; the family follows the text. */
export function inetAddress(address: string, port: number): InetAddress {
  const bytes = parseIp(address);
  return { family: bytes.length === 4 ? "inet" : "inet6", address: formatIp(bytes), port };
}

/** Formats an address for logs and messages: `1.2.3.4:5`, `[::1]:5`, `/path`. */
export function formatAddress(addr: SocketAddress): string {
  if (addr.family === "unix") return addr.path === "" ? "(unnamed)" : addr.path;
  return addr.family === "inet6"
    ? `[${addr.address}]:${addr.port}`
    : `${addr.address}:${addr.port}`;
}

/** sockaddr codec: sockaddr_in, sockaddr_in6 and sockaddr_un. */
export const sockaddr = {
  /** Bytes the encoding of `addr` takes. */
  encodedLength(addr: SocketAddress): number {
    if (addr.family !== "unix") {
      return addr.family === "inet" ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE;
    }
    // Abstract names: a leading NUL instead of a trailing one.
    return 2 + new TextEncoder().encode(addr.path).length + 1;
  },

  /** Encodes `addr`; ports are big endian, the family is host order. */
  encode(addr: SocketAddress): Uint8Array<ArrayBuffer> {
    if (addr.family === "unix") {
      const path = new TextEncoder().encode(addr.path);
      if (path.length > SUN_PATH_MAX) {
        throw new RangeError(
          `Cannot use unix socket path of ${path.length} bytes: at most ${SUN_PATH_MAX}`,
        );
      }
      if (path.includes(0)) {
        throw new TypeError("Cannot use unix socket path: it contains a NUL byte");
      }
      const out = new Uint8Array(2 + path.length + 1);
      view(out).setUint16(0, AF_UNIX, LITTLE_ENDIAN);
      out.set(path, addr.abstract === true ? 3 : 2);
      return out;
    }
    if (!Number.isInteger(addr.port) || addr.port < 0 || addr.port > 65535) {
      throw new RangeError(`Cannot use port ${addr.port}: out of range 0..65535`);
    }
    const ip = parseIp(addr.address);
    if (addr.family === "inet") {
      if (ip.length !== 4) throw new TypeError(`Cannot use "${addr.address}" as an IPv4 address`);
      const out = new Uint8Array(SOCKADDR_IN_SIZE);
      const dv = view(out);
      dv.setUint16(0, AF_INET, LITTLE_ENDIAN);
      dv.setUint16(2, addr.port, false);
      out.set(ip, 4);
      return out;
    }
    if (ip.length !== 16) throw new TypeError(`Cannot use "${addr.address}" as an IPv6 address`);
    const out = new Uint8Array(SOCKADDR_IN6_SIZE);
    const dv = view(out);
    dv.setUint16(0, AF_INET6, LITTLE_ENDIAN);
    dv.setUint16(2, addr.port, false);
    dv.setUint32(4, 0, false); // sin6_flowinfo
    out.set(ip, 8);
    dv.setUint32(24, addr.scopeId ?? 0, LITTLE_ENDIAN);
    return out;
  },

  /** Decodes the first `length` bytes of `buf` as written by the kernel. */
  decode(buf: Uint8Array, length = buf.byteLength): Decoded<SocketAddress> {
    if (length > buf.byteLength) {
      throw new RangeError(
        `Cannot decode sockaddr: length ${length} exceeds buffer of ${buf.byteLength}`,
      );
    }
    need(buf, 2, "sockaddr");
    if (length < 2) throw new RangeError(`Cannot decode sockaddr: length ${length} too short`);
    const dv = view(buf);
    const family = dv.getUint16(0, LITTLE_ENDIAN);
    if (family === AF_INET) {
      if (length < SOCKADDR_IN_SIZE) {
        throw new RangeError(`Cannot decode sockaddr_in: length ${length}`);
      }
      return {
        value: { family: "inet", address: formatIp(buf.slice(4, 8)), port: dv.getUint16(2, false) },
        bytesRead: SOCKADDR_IN_SIZE,
      };
    }
    if (family === AF_INET6) {
      if (length < SOCKADDR_IN6_SIZE) {
        throw new RangeError(`Cannot decode sockaddr_in6: length ${length}`);
      }
      const value: InetAddress = {
        family: "inet6",
        address: formatIp(buf.slice(8, 24)),
        port: dv.getUint16(2, false),
      };
      const scopeId = dv.getUint32(24, LITTLE_ENDIAN);
      if (scopeId !== 0) value.scopeId = scopeId;
      return { value, bytesRead: SOCKADDR_IN6_SIZE };
    }
    if (family === AF_UNIX) {
      const raw = buf.subarray(2, length);
      const nul = raw.indexOf(0);
      const path = new TextDecoder().decode(nul >= 0 ? raw.subarray(0, nul) : raw);
      return { value: { family: "unix", path }, bytesRead: length };
    }
    throw new TypeError(`Cannot decode sockaddr: unsupported family ${family}`);
  },
};

// ---------------------------------------------------------------------------
// Control messages (cmsghdr) and SCM_RIGHTS

/** sizeof(struct cmsghdr) on LP64: size_t cmsg_len; int cmsg_level; int cmsg_type. */
const CMSG_HEADER = 16;

/** CMSG_ALIGN: control data is aligned to sizeof(size_t). */
function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** CMSG_SPACE(n): bytes one control message with n data bytes occupies. */
export function cmsgSpace(dataLength: number): number {
  return CMSG_HEADER + cmsgAlign(dataLength);
}

/** One ancillary message. */
export interface ControlMessage {
  level: number;
  type: number;
  data: Uint8Array;
}

/** The maximum number of fds one SCM_RIGHTS message may carry (SCM_MAX_FD). */
export const SCM_MAX_FD = 253;

/** cmsghdr codec for a sequence of control messages. */
export const cmsg = {
  /** Bytes the encoding takes: the sum of CMSG_SPACE of each. */
  encodedLength(messages: readonly ControlMessage[]): number {
    return messages.reduce((sum, m) => sum + cmsgSpace(m.data.length), 0);
  },

  /** Encodes control messages one after another, each padded to alignment. */
  encode(messages: readonly ControlMessage[]): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(cmsg.encodedLength(messages));
    const dv = view(out);
    let offset = 0;
    for (const m of messages) {
      dv.setBigUint64(offset, BigInt(CMSG_HEADER + m.data.length), LITTLE_ENDIAN);
      dv.setInt32(offset + 8, m.level, LITTLE_ENDIAN);
      dv.setInt32(offset + 12, m.type, LITTLE_ENDIAN);
      out.set(m.data, offset + CMSG_HEADER);
      offset += cmsgSpace(m.data.length);
    }
    return out;
  },

  /** Decodes the first `length` bytes of a control buffer filled by recvmsg. */
  decode(buf: Uint8Array, length = buf.byteLength): Decoded<ControlMessage[]> {
    if (length > buf.byteLength) {
      throw new RangeError(
        `Cannot decode cmsg: length ${length} exceeds buffer of ${buf.byteLength}`,
      );
    }
    const dv = view(buf);
    const messages: ControlMessage[] = [];
    let offset = 0;
    while (offset + CMSG_HEADER <= length) {
      const len = Number(dv.getBigUint64(offset, LITTLE_ENDIAN));
      if (len < CMSG_HEADER || offset + len > length) {
        throw new RangeError(`Cannot decode cmsg at ${offset}: cmsg_len ${len} out of bounds`);
      }
      messages.push({
        level: dv.getInt32(offset + 8, LITTLE_ENDIAN),
        type: dv.getInt32(offset + 12, LITTLE_ENDIAN),
        data: buf.slice(offset + CMSG_HEADER, offset + len),
      });
      offset += Math.min(cmsgAlign(len), length - offset);
    }
    return { value: messages, bytesRead: offset };
  },
};

/** The SCM_RIGHTS control message that carries `fds`. */
export function rightsMessage(fds: readonly number[]): ControlMessage {
  if (fds.length === 0 || fds.length > SCM_MAX_FD) {
    throw new RangeError(`Cannot pass ${fds.length} fds: between 1 and ${SCM_MAX_FD} per message`);
  }
  const data = new Uint8Array(4 * fds.length);
  const dv = view(data);
  fds.forEach((fd, i) => {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Cannot pass fd ${fd}`);
    dv.setInt32(4 * i, fd, LITTLE_ENDIAN);
  });
  return { level: SOL_SOCKET, type: SCM_RIGHTS, data };
}

/** Every fd carried by SCM_RIGHTS messages in `messages`. */
export function rightsFds(messages: readonly ControlMessage[]): number[] {
  const fds: number[] = [];
  for (const m of messages) {
    if (m.level !== SOL_SOCKET || m.type !== SCM_RIGHTS) continue;
    const dv = view(m.data);
    for (let i = 0; i + 4 <= m.data.length; i += 4) fds.push(dv.getInt32(i, LITTLE_ENDIAN));
  }
  return fds;
}

// ---------------------------------------------------------------------------
// msghdr and iovec

/** sizeof(struct msghdr) on LP64. */
export const MSGHDR_SIZE = 56;
/** sizeof(struct iovec) on LP64. */
export const IOVEC_SIZE = 16;

/** What a msghdr points at. Every buffer must outlive the call it is used in. */
export interface MessageBuffers {
  /** msg_name: a sockaddr buffer, or null. */
  name: Uint8Array<ArrayBuffer> | null;
  /** The iovec entries. */
  iov: readonly Uint8Array<ArrayBuffer>[];
  /** msg_control: the control buffer, or null. */
  control: Uint8Array<ArrayBuffer> | null;
}

/** The msghdr plus the iovec array it points at (keep both alive). */
export interface EncodedMsghdr {
  msghdr: Uint8Array<ArrayBuffer>;
  iovec: Uint8Array<ArrayBuffer>;
}

function pointerValue(buf: Uint8Array<ArrayBuffer> | null): bigint {
  if (buf === null || buf.byteLength === 0) return 0n;
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/**
 * Encodes struct msghdr and its iovec array with raw pointers to `buffers`.
 * The caller keeps `buffers` and the result alive until the call returns.
 */
export function unsafeEncodeMsghdr(buffers: MessageBuffers): EncodedMsghdr {
  const iovec = new Uint8Array(Math.max(IOVEC_SIZE * buffers.iov.length, IOVEC_SIZE));
  const iv = view(iovec);
  buffers.iov.forEach((b, i) => {
    iv.setBigUint64(i * IOVEC_SIZE, pointerValue(b), LITTLE_ENDIAN);
    iv.setBigUint64(i * IOVEC_SIZE + 8, BigInt(b.byteLength), LITTLE_ENDIAN);
  });
  const msghdr = new Uint8Array(MSGHDR_SIZE);
  const dv = view(msghdr);
  dv.setBigUint64(0, pointerValue(buffers.name), LITTLE_ENDIAN);
  dv.setUint32(8, buffers.name?.byteLength ?? 0, LITTLE_ENDIAN);
  dv.setBigUint64(16, buffers.iov.length > 0 ? pointerValue(iovec) : 0n, LITTLE_ENDIAN);
  dv.setBigUint64(24, BigInt(buffers.iov.length), LITTLE_ENDIAN);
  dv.setBigUint64(32, pointerValue(buffers.control), LITTLE_ENDIAN);
  dv.setBigUint64(40, BigInt(buffers.control?.byteLength ?? 0), LITTLE_ENDIAN);
  dv.setInt32(48, 0, LITTLE_ENDIAN);
  return { msghdr, iovec };
}

/** The fields recvmsg writes back into a msghdr. */
export interface MsghdrResult {
  nameLength: number;
  controlLength: number;
  flags: number;
}

/** Reads msg_namelen, msg_controllen and msg_flags after recvmsg. */
export function decodeMsghdr(msghdr: Uint8Array): Decoded<MsghdrResult> {
  need(msghdr, MSGHDR_SIZE, "msghdr");
  const dv = view(msghdr);
  return {
    value: {
      nameLength: dv.getUint32(8, LITTLE_ENDIAN),
      controlLength: Number(dv.getBigUint64(40, LITTLE_ENDIAN)),
      flags: dv.getInt32(48, LITTLE_ENDIAN),
    },
    bytesRead: MSGHDR_SIZE,
  };
}

// ---------------------------------------------------------------------------
// pollfd, ucred, epoll_event, int

/** One struct pollfd. */
export interface PollFd {
  fd: number;
  events: number;
  revents: number;
}

/** struct pollfd array codec (8 bytes each). */
export const pollfd = {
  /** 8 bytes per entry. */
  encodedLength(entries: readonly PollFd[]): number {
    return 8 * entries.length;
  },
  /** Encodes the array; revents is written as given (normally 0). */
  encode(entries: readonly PollFd[]): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(8 * entries.length);
    const dv = view(out);
    entries.forEach((e, i) => {
      dv.setInt32(8 * i, e.fd, LITTLE_ENDIAN);
      dv.setInt16(8 * i + 4, e.events, LITTLE_ENDIAN);
      dv.setInt16(8 * i + 6, e.revents, LITTLE_ENDIAN);
    });
    return out;
  },
  /** Decodes every whole entry in `buf`. */
  decode(buf: Uint8Array): Decoded<PollFd[]> {
    const dv = view(buf);
    const entries: PollFd[] = [];
    for (let i = 0; i + 8 <= buf.byteLength; i += 8) {
      entries.push({
        fd: dv.getInt32(i, LITTLE_ENDIAN),
        events: dv.getUint16(i + 4, LITTLE_ENDIAN),
        revents: dv.getUint16(i + 6, LITTLE_ENDIAN),
      });
    }
    return { value: entries, bytesRead: entries.length * 8 };
  },
};

/** Peer credentials from SO_PEERCRED. */
export interface Ucred {
  pid: number;
  uid: number;
  gid: number;
}

/** struct ucred codec (pid_t, uid_t, gid_t: 12 bytes). */
export const ucred = {
  /** Always 12. */
  encodedLength(): number {
    return 12;
  },
  /** Encodes the three ids. */
  encode(value: Ucred): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(12);
    const dv = view(out);
    dv.setInt32(0, value.pid, LITTLE_ENDIAN);
    dv.setUint32(4, value.uid, LITTLE_ENDIAN);
    dv.setUint32(8, value.gid, LITTLE_ENDIAN);
    return out;
  },
  /** Decodes the three ids. */
  decode(buf: Uint8Array): Decoded<Ucred> {
    need(buf, 12, "ucred");
    const dv = view(buf);
    return {
      value: {
        pid: dv.getInt32(0, LITTLE_ENDIAN),
        uid: dv.getUint32(4, LITTLE_ENDIAN),
        gid: dv.getUint32(8, LITTLE_ENDIAN),
      },
      bytesRead: 12,
    };
  },
};

/**
 * sizeof(struct epoll_event): the struct is packed on x86_64 (12 bytes) and
 * naturally aligned elsewhere (16 bytes).
 */
export const EPOLL_EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const EPOLL_DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;

/** One struct epoll_event: the event bits and the 64-bit user data. */
export interface EpollEvent {
  events: number;
  data: bigint;
}

/** struct epoll_event array codec. */
export const epollEvent = {
  /** EPOLL_EVENT_SIZE per entry. */
  encodedLength(entries: readonly EpollEvent[]): number {
    return EPOLL_EVENT_SIZE * entries.length;
  },
  /** Encodes the array. */
  encode(entries: readonly EpollEvent[]): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(EPOLL_EVENT_SIZE * entries.length);
    const dv = view(out);
    entries.forEach((e, i) => {
      dv.setUint32(i * EPOLL_EVENT_SIZE, e.events >>> 0, LITTLE_ENDIAN);
      dv.setBigUint64(i * EPOLL_EVENT_SIZE + EPOLL_DATA_OFFSET, e.data, LITTLE_ENDIAN);
    });
    return out;
  },
  /** Decodes the first `count` entries. */
  decode(buf: Uint8Array, count: number): Decoded<EpollEvent[]> {
    need(buf, count * EPOLL_EVENT_SIZE, "epoll_event array");
    const dv = view(buf);
    const entries: EpollEvent[] = [];
    for (let i = 0; i < count; i++) {
      entries.push({
        events: dv.getUint32(i * EPOLL_EVENT_SIZE, LITTLE_ENDIAN),
        data: dv.getBigUint64(i * EPOLL_EVENT_SIZE + EPOLL_DATA_OFFSET, LITTLE_ENDIAN),
      });
    }
    return { value: entries, bytesRead: count * EPOLL_EVENT_SIZE };
  },
};

/** A C int as 4 bytes (socket options). */
export function encodeInt(value: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(4);
  view(out).setInt32(0, value, LITTLE_ENDIAN);
  return out;
}

/** Reads a C int from 4 bytes. */
export function decodeInt(buf: Uint8Array): number {
  need(buf, 4, "int");
  return view(buf).getInt32(0, LITTLE_ENDIAN);
}

// ---------------------------------------------------------------------------
// Packet sockets: sockaddr_ll, classic BPF programs, TCP repair options

/** sizeof(struct sockaddr_ll). */
export const SOCKADDR_LL_SIZE = 20;

/** struct sockaddr_ll (packet socket address). */
export interface LinkAddress {
  /** ETH_P_* in host order. */
  protocol: number;
  ifindex: number;
  hatype: number;
  /** PACKET_HOST, PACKET_OUTGOING, ... */
  pkttype: number;
  address: Uint8Array;
}

/** sockaddr_ll codec. */
export const sockaddrLl = {
  /** Always 20. */
  encodedLength(): number {
    return SOCKADDR_LL_SIZE;
  },
  /** Encodes; protocol goes out in network order. */
  encode(a: LinkAddress): Uint8Array<ArrayBuffer> {
    if (a.address.length > 8) {
      throw new RangeError("Cannot encode sockaddr_ll: address longer than 8 bytes");
    }
    const out = new Uint8Array(SOCKADDR_LL_SIZE);
    const dv = view(out);
    dv.setUint16(0, 17, LITTLE_ENDIAN); // AF_PACKET
    dv.setUint16(2, a.protocol, false);
    dv.setInt32(4, a.ifindex, LITTLE_ENDIAN);
    dv.setUint16(8, a.hatype, LITTLE_ENDIAN);
    out[10] = a.pkttype;
    out[11] = a.address.length;
    out.set(a.address, 12);
    return out;
  },
  /** Decodes what recvfrom wrote. */
  decode(buf: Uint8Array): Decoded<LinkAddress> {
    need(buf, 12, "sockaddr_ll");
    const dv = view(buf);
    if (dv.getUint16(0, LITTLE_ENDIAN) !== 17) {
      throw new TypeError("Cannot decode sockaddr_ll: family is not AF_PACKET");
    }
    const halen = Math.min(buf[11] ?? 0, 8);
    need(buf, 12 + halen, "sockaddr_ll address");
    return {
      value: {
        protocol: dv.getUint16(2, false),
        ifindex: dv.getInt32(4, LITTLE_ENDIAN),
        hatype: dv.getUint16(8, LITTLE_ENDIAN),
        pkttype: buf[10] ?? 0,
        address: buf.slice(12, 12 + halen),
      },
      // The kernel reports 12 + halen bytes (18 for Ethernet), not sizeof(struct sockaddr_ll).
      bytesRead: 12 + halen,
    };
  },
};

/** One classic BPF instruction (struct sock_filter). */
export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** struct sock_filter array codec (8 bytes each). */
export const sockFilter = {
  /** 8 bytes per instruction. */
  encodedLength(program: readonly BpfInstruction[]): number {
    return 8 * program.length;
  },
  /** Encodes the program. */
  encode(program: readonly BpfInstruction[]): Uint8Array<ArrayBuffer> {
    if (program.length === 0 || program.length > 4096) {
      throw new RangeError(`Cannot encode a BPF program of ${program.length} instructions`);
    }
    const out = new Uint8Array(8 * program.length);
    const dv = view(out);
    program.forEach((ins, i) => {
      dv.setUint16(8 * i, ins.code, LITTLE_ENDIAN);
      out[8 * i + 2] = ins.jt;
      out[8 * i + 3] = ins.jf;
      dv.setUint32(8 * i + 4, ins.k >>> 0, LITTLE_ENDIAN);
    });
    return out;
  },
  /** Decodes every whole instruction. */
  decode(buf: Uint8Array): Decoded<BpfInstruction[]> {
    const dv = view(buf);
    const program: BpfInstruction[] = [];
    for (let i = 0; i + 8 <= buf.length; i += 8) {
      program.push({
        code: dv.getUint16(i, LITTLE_ENDIAN),
        jt: buf[i + 2] ?? 0,
        jf: buf[i + 3] ?? 0,
        k: dv.getUint32(i + 4, LITTLE_ENDIAN),
      });
    }
    return { value: program, bytesRead: program.length * 8 };
  },
};

/**
 * struct sock_fprog { unsigned short len; struct sock_filter *filter; } with
 * a raw pointer to `filter`: keep `filter` alive while the call runs.
 */
export function unsafeEncodeSockFprog(filter: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(16);
  const dv = view(out);
  dv.setUint16(0, filter.length / 8, LITTLE_ENDIAN);
  dv.setBigUint64(8, pointerValue(filter), LITTLE_ENDIAN);
  return out;
}

/** One struct tcp_repair_opt { u32 opt_code; u32 opt_val; }. */
export interface TcpRepairOption {
  code: number;
  value: number;
}

/** struct tcp_repair_opt array codec. */
export const tcpRepairOptions = {
  /** 8 bytes per option. */
  encodedLength(options: readonly TcpRepairOption[]): number {
    return 8 * options.length;
  },
  /** Encodes the array. */
  encode(options: readonly TcpRepairOption[]): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(8 * options.length);
    const dv = view(out);
    options.forEach((o, i) => {
      dv.setUint32(8 * i, o.code >>> 0, LITTLE_ENDIAN);
      dv.setUint32(8 * i + 4, o.value >>> 0, LITTLE_ENDIAN);
    });
    return out;
  },
  /** Decodes every whole option. */
  decode(buf: Uint8Array): Decoded<TcpRepairOption[]> {
    const dv = view(buf);
    const options: TcpRepairOption[] = [];
    for (let i = 0; i + 8 <= buf.length; i += 8) {
      options.push({
        code: dv.getUint32(i, LITTLE_ENDIAN),
        value: dv.getUint32(i + 4, LITTLE_ENDIAN),
      });
    }
    return { value: options, bytesRead: options.length * 8 };
  },
};

/** struct tcp_repair_window (TCP_REPAIR_WINDOW). */
export interface TcpRepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

/** struct tcp_repair_window codec (five u32). */
export const tcpRepairWindow = {
  /** Always 20. */
  encodedLength(): number {
    return 20;
  },
  /** Encodes the five fields. */
  encode(w: TcpRepairWindow): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(20);
    const dv = view(out);
    [w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup].forEach((v, i) =>
      dv.setUint32(4 * i, v >>> 0, LITTLE_ENDIAN)
    );
    return out;
  },
  /** Decodes the five fields. */
  decode(buf: Uint8Array): Decoded<TcpRepairWindow> {
    need(buf, 20, "tcp_repair_window");
    const dv = view(buf);
    const f = (i: number) => dv.getUint32(4 * i, LITTLE_ENDIAN);
    return {
      value: { sndWl1: f(0), sndWnd: f(1), maxWindow: f(2), rcvWnd: f(3), rcvWup: f(4) },
      bytesRead: 20,
    };
  },
};
