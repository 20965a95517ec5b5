/**
 * A TUN device read and written from this process, with the kernel's
 * virtio-net header in front of each packet so that large (GSO) packets
 * pass whole: the bench's delay line (tests/bench/syni_delay_line.ts) holds
 * every packet routed into the device for a while and writes it back
 * unchanged, header included, the way a long path would deliver it.
 *
 * @module
 */

import { SyscallError } from "./errno.ts";
import { cString } from "./libc.ts";

const TUN_SYMBOLS = {
  /** int open(const char *path, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int ioctl(int fd, unsigned long request, struct ifreq *ifr); */
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** int ioctl(int fd, unsigned long request, unsigned long value); */
  ioctlValue: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); (blocks this thread) */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
} satisfies Deno.ForeignLibraryInterface;

type TunSymbols = Deno.DynamicLibrary<typeof TUN_SYMBOLS>["symbols"];
let opened: { symbols: TunSymbols; errno: Int32Array } | undefined;

function lib(): { symbols: TunSymbols; errno: Int32Array } {
  if (opened !== undefined) return opened;
  const symbols = Deno.dlopen("libc.so.6", TUN_SYMBOLS).symbols;
  const location = symbols.__errno_location();
  if (location === null) throw new Error("Cannot locate errno");
  opened = { symbols, errno: new Int32Array(Deno.UnsafePointerView.getArrayBuffer(location, 4)) };
  return opened;
}

const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;
/** _IOW('T', 202, int) and _IOW('T', 208, unsigned int) (linux/if_tun.h). */
const TUNSETIFF = 0x400454can;
const TUNSETOFFLOAD = 0x400454d0n;
const IFF_TUN = 0x0001;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
/** TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: checksums left undone and TCP segmentation pass through. */
const TUN_OFFLOADS = 0x1n | 0x2n | 0x4n;
const IFNAMSIZ = 16;
const POLLIN = 0x1;

/** A TUN device (IFF_TUN, IFF_NO_PI, IFF_VNET_HDR with TCP offloads) owned by this process. */
export class Tun {
  #fd: number;
  /** The interface name. */
  readonly name: string;

  private constructor(fd: number, name: string) {
    this.#fd = fd;
    this.name = name;
  }

  /** Creates interface `name` in this thread's network namespace (it vanishes on close). */
  static create(name: string): Tun {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new TypeError(`Cannot name a TUN "${name}"`);
    const { symbols, errno } = lib();
    const fd = symbols.open(cString("/dev/net/tun"), O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) throw new SyscallError("open /dev/net/tun", errno[0] ?? 0);
    const tun = new Tun(fd, name);
    try {
      const ifreq = new Uint8Array(40);
      ifreq.set(new TextEncoder().encode(name));
      new DataView(ifreq.buffer).setUint16(IFNAMSIZ, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, true);
      if (symbols.ioctl(fd, TUNSETIFF, ifreq) < 0) {
        throw new SyscallError("ioctl TUNSETIFF", errno[0] ?? 0);
      }
      if (symbols.ioctlValue(fd, TUNSETOFFLOAD, TUN_OFFLOADS) < 0) {
        throw new SyscallError("ioctl TUNSETOFFLOAD", errno[0] ?? 0);
      }
    } catch (error) {
      tun.close();
      throw error;
    }
    return tun;
  }

  #live(): number {
    if (this.#fd < 0) throw new Error(`Cannot use TUN ${this.name}: closed`);
    return this.#fd;
  }

  /** One packet (virtio-net header first) into `buf`: its length, or null when none waits. */
  read(buf: Uint8Array<ArrayBuffer>): number | null {
    const { symbols, errno } = lib();
    for (;;) {
      const n = Number(symbols.read(this.#live(), buf, BigInt(buf.byteLength)));
      if (n >= 0) return n;
      const e = errno[0] ?? 0;
      if (e === EAGAIN) return null;
      if (e !== EINTR) throw new SyscallError("read", e);
    }
  }

  /** Writes one packet (virtio-net header first) back into the kernel. */
  write(packet: Uint8Array<ArrayBuffer>): void {
    const { symbols, errno } = lib();
    for (;;) {
      const n = Number(symbols.write(this.#live(), packet, BigInt(packet.byteLength)));
      if (n >= 0) return;
      const e = errno[0] ?? 0;
      if (e !== EINTR) throw new SyscallError("write", e);
    }
  }

  /**
   * Blocks this thread until a packet waits or `timeoutMs` passes (no
   * other JavaScript runs meanwhile: for a process that does nothing else).
   */
  waitReadable(timeoutMs: number): void {
    const pollfd = new Uint8Array(8);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, this.#live(), true);
    view.setInt16(4, POLLIN, true);
    const { symbols, errno } = lib();
    if (symbols.poll(pollfd, 1n, Math.max(0, Math.ceil(timeoutMs))) < 0) {
      const e = errno[0] ?? 0;
      if (e !== EINTR) throw new SyscallError("poll", e);
    }
  }

  /** Closes the device (idempotent). */
  close(): void {
    if (this.#fd < 0) return;
    lib().symbols.close(this.#fd);
    this.#fd = -1;
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
