/**
 * A per-thread hook told about every fd that `Socket` and the reactor take
 * or give up. Technique workers forward it to the daemon, so that the fds of
 * a worker that crashed or was terminated can still be released (fds are
 * process wide; a worker's death closes none of them).
 *
 * @module
 */

/** What an fd is for: a socket, the reactor's epoll set, or its wake-up eventfd. */
export type FdKind = "socket" | "epoll" | "wake";

/** Told about every fd this thread's ffi objects take or give up. */
export interface FdObserver {
  /** `fd` is now owned by this thread. */
  opened(fd: number, kind: FdKind): void;
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
  observer?.opened(fd, kind);
}

/** Reports a released fd. */
export function noteReleased(fd: number): void {
  observer?.released(fd);
}
