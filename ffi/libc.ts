/**
 * The one table of libc symbols punchd calls, opened once per thread (the
 * daemon and each technique worker open their own handle).
 *
 * Only modules under `ffi/` import this file. Types follow the C prototypes on
 * x86_64/aarch64 Linux (LP64): `int` is i32, `size_t`/`ssize_t` are
 * usize/isize, `socklen_t` and `mode_t` are u32, pointers to caller memory are
 * `buffer` (a Uint8Array, or null).
 *
 * Every symbol is synchronous (errno is read on this thread right after the
 * call) except `epoll_wait`, which waits and therefore runs on Deno's blocking
 * thread pool; the reactor is its only caller and does not need errno.
 *
 * @module
 */

/** libc's symbol table, with each C prototype beside its entry. */
export const LIBC_SYMBOLS = {
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int socketpair(int domain, int type, int protocol, int sv[2]); */
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog); */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags); */
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int shutdown(int fd, int how); */
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  /** int setsockopt(int fd, int level, int name, const void *val, socklen_t len); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int getsockopt(int fd, int level, int name, void *val, socklen_t *len); */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** int getsockname(int fd, struct sockaddr *addr, socklen_t *len); */
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int getpeername(int fd, struct sockaddr *addr, socklen_t *len); */
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** ssize_t sendmsg(int fd, const struct msghdr *msg, int flags); */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ssize_t recvmsg(int fd, struct msghdr *msg, int flags); */
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen); */
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  /** ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen); */
  recvfrom: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"],
    result: "isize",
  },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int fcntl(int fd, int cmd, int arg); (the variadic argument is an int for the commands used) */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout); (called with timeout 0 only) */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int epoll_create1(int flags); */
  epoll_create1: { parameters: ["i32"], result: "i32" },
  /** int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event); */
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout); */
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** int unlink(const char *path); */
  unlink: { parameters: ["buffer"], result: "i32" },
  /** int open(const char *path, int flags, mode_t mode); */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int flock(int fd, int operation); */
  flock: { parameters: ["i32", "i32"], result: "i32" },
  /** int capget(cap_user_header_t hdrp, cap_user_data_t datap); */
  capget: { parameters: ["buffer", "buffer"], result: "i32" },
  /** char *getenv(const char *name); */
  getenv: { parameters: ["buffer"], result: "pointer" },
  /** ssize_t readlink(const char *path, char *buf, size_t size); */
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** int lchown(const char *path, uid_t owner, gid_t group); (never follows a symlink) */
  lchown: { parameters: ["buffer", "u32", "u32"], result: "i32" },
  /** int mkdir(const char *path, mode_t mode); */
  mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  /** int malloc_trim(size_t pad); */
  malloc_trim: { parameters: ["usize"], result: "i32" },
  /** int mallopt(int param, int value); */
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
  /** uid_t geteuid(void); */
  geteuid: { parameters: [], result: "u32" },
  /** mode_t umask(mode_t mask); */
  umask: { parameters: ["u32"], result: "u32" },
  /** int getifaddrs(struct ifaddrs **ifap); */
  getifaddrs: { parameters: ["buffer"], result: "i32" },
  /** void freeifaddrs(struct ifaddrs *ifa); */
  freeifaddrs: { parameters: ["pointer"], result: "void" },
  /** struct passwd *getpwnam(const char *name); */
  getpwnam: { parameters: ["buffer"], result: "pointer" },
  /** struct group *getgrnam(const char *name); */
  getgrnam: { parameters: ["buffer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened library's symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

let opened: LibcSymbols | undefined;
/** errno as the last synchronous symbol left it, captured as that call returned. */
let lastErrno = 0;

/**
 * The thread's errno variable itself: an Int32Array over the memory that
 * `__errno_location()` names (one per thread, fixed for its life).
 */
function errnoCell(raw: LibcSymbols): Int32Array {
  const location = raw.__errno_location();
  if (location === null) throw new Error("Cannot locate errno");
  return new Int32Array(Deno.UnsafePointerView.getArrayBuffer(location, 4));
}

/**
 * libc, opened on first use in this thread. Every synchronous symbol is
 * wrapped so that errno is read the moment the C function returns, in the
 * same JavaScript step, before anything else can run on this thread: the
 * Deno runtime makes system calls of its own on the JS thread (a stat of a
 * missing file leaves ENOENT), and V8 services interrupts at every function
 * entry, so errno read by a later call may be someone else's.
 */
export function libc(): LibcSymbols {
  if (opened !== undefined) return opened;
  const raw = Deno.dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
  const cell = errnoCell(raw);
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(raw)) {
    const definition: Deno.ForeignFunction = LIBC_SYMBOLS[name as keyof typeof LIBC_SYMBOLS];
    if (definition.nonblocking === true || typeof fn !== "function") {
      // Runs on another thread: its errno is not this thread's to read.
      wrapped[name] = fn;
      continue;
    }
    const call = fn as (...args: unknown[]) => unknown;
    wrapped[name] = (...args: unknown[]) => {
      const result = call(...args);
      lastErrno = cell[0] ?? 0;
      return result;
    };
  }
  opened = wrapped as LibcSymbols;
  return opened;
}

/** errno as the last synchronous libc call on this thread left it (read as it returned). */
export function errno(): number {
  return lastErrno;
}

/**
 * Reads `struct group.gr_gid` from getgrnam's result, or undefined when the
 * group does not exist. Lives here because it is the one struct libc owns.
 */
export function groupId(name: string): number | undefined {
  const pointer = libc().getgrnam(cString(name));
  if (pointer === null) return undefined;
  // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; char **gr_mem; }
  return new Deno.UnsafePointerView(pointer).getUint32(16);
}

/** The uid of user `name`, or undefined when there is none. */
export function userId(name: string): number | undefined {
  const pointer = libc().getpwnam(cString(name));
  if (pointer === null) return undefined;
  // struct passwd { char *pw_name; char *pw_passwd; uid_t pw_uid; gid_t pw_gid; ... }
  return new Deno.UnsafePointerView(pointer).getUint32(16);
}

/** A NUL-terminated copy of `text` for `const char *` parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const encoded = new TextEncoder().encode(text);
  if (encoded.includes(0)) throw new TypeError("Cannot pass a C string: it contains a NUL byte");
  const out = new Uint8Array(encoded.length + 1);
  out.set(encoded);
  return out;
}
