/**
 * Running a few synchronous calls inside another network namespace (a
 * `ip netns` name), from this process: setns(2) moves only the calling
 * thread, which is the JavaScript thread for synchronous FFI calls, and a
 * socket keeps the namespace it was created in. The lab and the bench use it
 * to open ordinary kernel connections between lab hosts next to the ones
 * punchd makes, in the same process.
 *
 * @module
 */

import { CLONE_NEWNET } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { cString } from "./libc.ts";

const NETNS_SYMBOLS = {
  /** int open(const char *path, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int setns(int fd, int nstype); */
  setns: { parameters: ["i32", "i32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
} satisfies Deno.ForeignLibraryInterface;

type NetnsSymbols = Deno.DynamicLibrary<typeof NETNS_SYMBOLS>["symbols"];
let opened: { symbols: NetnsSymbols; errno: Int32Array } | undefined;

function lib(): { symbols: NetnsSymbols; errno: Int32Array } {
  if (opened !== undefined) return opened;
  const symbols = Deno.dlopen("libc.so.6", NETNS_SYMBOLS).symbols;
  const location = symbols.__errno_location();
  if (location === null) throw new Error("Cannot locate errno");
  opened = { symbols, errno: new Int32Array(Deno.UnsafePointerView.getArrayBuffer(location, 4)) };
  return opened;
}

const O_RDONLY_CLOEXEC = 0o2000000;

function openNs(path: string): number {
  const { symbols, errno } = lib();
  const fd = symbols.open(cString(path), O_RDONLY_CLOEXEC, 0);
  if (fd < 0) throw new SyscallError(`open ${path}`, errno[0] ?? 0);
  return fd;
}

function enter(fd: number): void {
  const { symbols, errno } = lib();
  if (symbols.setns(fd, CLONE_NEWNET) < 0) throw new SyscallError("setns", errno[0] ?? 0);
}

/**
 * Runs `fn` (synchronous: nothing else may run meanwhile) with this thread
 * in the network namespace `name` (/run/netns/NAME), and returns to the
 * thread's own namespace afterwards, whether `fn` throws or not. Sockets
 * `fn` creates stay in `name`. Needs CAP_SYS_ADMIN.
 */
export function inNetns<T>(name: string, fn: () => T): T {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new TypeError(`Cannot use netns name "${name}"`);
  const own = openNs("/proc/thread-self/ns/net");
  try {
    const target = openNs(`/run/netns/${name}`);
    try {
      enter(target);
    } finally {
      lib().symbols.close(target);
    }
    try {
      return fn();
    } finally {
      enter(own);
    }
  } finally {
    lib().symbols.close(own);
  }
}
