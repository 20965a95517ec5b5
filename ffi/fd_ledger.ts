/**
 * A per-thread hook told about every fd that `Socket` and the reactor take
 * or give up. Technique workers forward it to the daemon, so that the fds of
 * a worker that crashed or was terminated can still be released (fds are
 * process wide; a worker's death closes none of them).
 *
 * @module
 */

import { readLink } from "./syscalls.ts";

/** What an fd is for: a socket, the reactor's epoll set, or its wake-up eventfd. */
export type FdKind = "socket" | "epoll" | "wake";

/** Told about every fd this thread's ffi objects take or give up. */
export interface FdObserver {
  /**
   * `fd` is now owned by this thread. `identity` names the open file behind the number
   * (`socket:[INODE]`, see {@linkcode fdIdentity}), so that whoever closes it later on this
   * thread's behalf can tell it from a file that took the same number after this thread
   * closed it (fd numbers are reused at once).
   */
  opened(fd: number, kind: FdKind, identity: string | null): void;
  /** `fd` was closed or handed to another owner. */
  released(fd: number): void;
}

let observer: FdObserver | null = null;

/** Sets this thread's observer (null to stop observing). */
export function observeFds(next: FdObserver | null): void {
  observer = next;
}

/** Reports a newly owned fd. */
export function noteOpened(fd: number, kind: FdKind): void {
  if (observer !== null) observer.opened(fd, kind, fdIdentity(fd));
}

/**
 * What `fd` refers to now: the target of `/proc/self/fd/FD` (`socket:[INODE]`, `pipe:[INODE]`,
 * `anon_inode:[eventpoll]` ...), or null when it is not open. Sockets and pipes have inode
 * numbers of their own, so the same text means the same open socket.
 */
export function fdIdentity(fd: number): string | null {
  try {
    return readLink(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/** Reports a released fd. */
export function noteReleased(fd: number): void {
  observer?.released(fd);
}
