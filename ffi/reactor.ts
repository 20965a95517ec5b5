/**
 * One readiness reactor per thread: a single epoll set and a single waiting
 * `epoll_wait` call for every fd the thread waits on.
 *
 * Deno runs `nonblocking` FFI calls on a small shared thread pool, so one
 * waiting call per socket would stall everything past a few dozen sockets.
 * Here each fd is registered once (EPOLLONESHOT, re-armed while someone waits
 * on it) and one loop waits for all of them; an eventfd wakes the loop early
 * when the last waiter goes away so the loop can end and the thread can exit.
 *
 * ```
 *            wait(fd)                        event / cancel
 *  idle ──────────────► waiting(epoll_wait) ────────────────► dispatch
 *   ▲                        ▲                                   │
 *   └──── no waiters left ───┴─────────── waiters remain ────────┘
 * ```
 *
 * @module
 */

import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLONESHOT,
  EPOLLOUT,
  EPOLLRDHUP,
} from "./constants.ts";
import { errno, libc } from "./libc.ts";
import { noteOpened } from "./fd_ledger.ts";
import { ENOENT, SyscallError } from "./errno.ts";
import { EPOLL_EVENT_SIZE, epollEvent } from "./structs.ts";

/** Readiness to wait for. */
export type Interest = "readable" | "writable";

/** Thrown to waiters of an fd that was forgotten (closed) while they waited. */
export class FdClosedError extends Error {
  /** The fd that was closed. */
  readonly fd: number;
  /** Builds the error for `fd`. */
  constructor(fd: number) {
    super(`Cannot wait on fd ${fd}: it was closed`);
    this.name = "FdClosedError";
    this.fd = fd;
  }
}

interface Waiter {
  interest: Interest;
  resolve: (events: number) => void;
  reject: (error: Error) => void;
}

interface Registration {
  fd: number;
  generation: number;
  waiters: Set<Waiter>;
}

const MAX_EVENTS = 256;
const WAKE_TOKEN = 0xffff_ffff_ffff_ffffn;
const READ_EVENTS = EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP;
const WRITE_EVENTS = EPOLLOUT | EPOLLERR | EPOLLHUP;

/** A per-thread epoll reactor. Use {@linkcode reactor} to get this thread's. */
export class Reactor {
  #epfd = -1;
  #wakefd = -1;
  #registrations = new Map<number, Registration>();
  #waiting = 0;
  #generation = 0;
  #loop: Promise<void> | null = null;
  #events = new Uint8Array(MAX_EVENTS * EPOLL_EVENT_SIZE);

  #open(): void {
    if (this.#epfd >= 0) return;
    const c = libc();
    const epfd = c.epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) throw new SyscallError("epoll_create1", errno());
    const wakefd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakefd < 0) {
      const e = errno();
      c.close(epfd);
      throw new SyscallError("eventfd", e);
    }
    const ev = epollEvent.encode([{ events: EPOLLIN, data: WAKE_TOKEN }]);
    if (c.epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, ev) < 0) {
      const e = errno();
      c.close(epfd);
      c.close(wakefd);
      throw new SyscallError("epoll_ctl", e);
    }
    this.#epfd = epfd;
    this.#wakefd = wakefd;
    noteOpened(epfd, "epoll");
    noteOpened(wakefd, "wake");
  }

  /** Number of fds with at least one waiter (for tests and metrics). */
  get waitingFds(): number {
    let n = 0;
    for (const r of this.#registrations.values()) if (r.waiters.size > 0) n++;
    return n;
  }

  /**
   * Resolves with the epoll event bits once `fd` is readable or writable (or
   * has an error or hang-up, which callers discover by retrying their call).
   * Rejects with the signal's reason when aborted, or FdClosedError when the
   * fd is forgotten.
   */
  wait(fd: number, interest: Interest, signal?: AbortSignal): Promise<number> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.#open();
    return new Promise<number>((resolve, reject) => {
      let registration = this.#registrations.get(fd);
      const fresh = registration === undefined;
      registration ??= { fd, generation: ++this.#generation, waiters: new Set() };
      const onAbort = () => {
        if (registration.waiters.delete(waiter)) {
          this.#waiting--;
          this.#arm(registration, false);
          this.#wakeIfIdle();
          reject(signal?.reason);
        }
      };
      const waiter: Waiter = {
        interest,
        resolve: (events) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(events);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      registration.waiters.add(waiter);
      this.#waiting++;
      try {
        this.#arm(registration, fresh);
      } catch (error) {
        registration.waiters.delete(waiter);
        this.#waiting--;
        reject(error);
        return;
      }
      if (fresh) this.#registrations.set(fd, registration);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#loop ??= this.#run();
    });
  }

  /**
   * Removes `fd` from the reactor before it is closed or handed to another
   * owner; pending waiters reject with FdClosedError.
   */
  forget(fd: number): void {
    const registration = this.#registrations.get(fd);
    if (registration === undefined) return;
    this.#registrations.delete(fd);
    libc().epoll_ctl(this.#epfd, EPOLL_CTL_DEL, fd, null);
    const waiters = [...registration.waiters];
    registration.waiters.clear();
    this.#waiting -= waiters.length;
    for (const w of waiters) w.reject(new FdClosedError(fd));
    this.#wakeIfIdle();
  }

  #arm(registration: Registration, add: boolean): void {
    let events = 0;
    for (const w of registration.waiters) {
      events |= w.interest === "readable" ? READ_EVENTS : WRITE_EVENTS;
    }
    const data = (BigInt(registration.generation) << 32n) | BigInt(registration.fd);
    const ev = epollEvent.encode([{ events: events === 0 ? 0 : events | EPOLLONESHOT, data }]);
    const c = libc();
    if (c.epoll_ctl(this.#epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, registration.fd, ev) === 0) {
      return;
    }
    let e = errno();
    // The fd was closed and reused behind the reactor's back: register it anew.
    if (!add && e === ENOENT) {
      if (c.epoll_ctl(this.#epfd, EPOLL_CTL_ADD, registration.fd, ev) === 0) return;
      e = errno();
    }
    throw new SyscallError("epoll_ctl", e);
  }

  #wakeIfIdle(): void {
    if (this.#waiting === 0 && this.#loop !== null) {
      const one = new Uint8Array(8);
      one[0] = 1;
      libc().write(this.#wakefd, one, 8n);
    }
  }

  async #run(): Promise<void> {
    const c = libc();
    let failures = 0;
    try {
      while (this.#waiting > 0) {
        const n = await c.epoll_wait(this.#epfd, this.#events, MAX_EVENTS, -1);
        if (n < 0) {
          // EINTR is the only expected failure; give up after many in a row.
          if (++failures > 1000) {
            throw new Error("Cannot wait for readiness: epoll_wait keeps failing");
          }
          continue;
        }
        failures = 0;
        for (const { events, data } of epollEvent.decode(this.#events, n).value) {
          if (data === WAKE_TOKEN) {
            c.read(this.#wakefd, new Uint8Array(8), 8n);
            continue;
          }
          this.#dispatch(Number(data & 0xffff_ffffn), Number(data >> 32n), events);
        }
      }
    } catch (error) {
      for (const fd of [...this.#registrations.keys()]) {
        const r = this.#registrations.get(fd);
        if (r === undefined) continue;
        const waiters = [...r.waiters];
        r.waiters.clear();
        this.#waiting -= waiters.length;
        for (const w of waiters) {
          w.reject(error instanceof Error ? error : new Error(String(error)));
        }
      }
    } finally {
      this.#loop = null;
    }
  }

  #dispatch(fd: number, generation: number, events: number): void {
    const registration = this.#registrations.get(fd);
    if (registration === undefined || registration.generation !== generation) return;
    const ready: Waiter[] = [];
    for (const w of registration.waiters) {
      const mask = w.interest === "readable" ? READ_EVENTS : WRITE_EVENTS;
      if (events & mask) ready.push(w);
    }
    for (const w of ready) registration.waiters.delete(w);
    this.#waiting -= ready.length;
    // ONESHOT disarmed the fd; re-arm for whoever still waits.
    if (registration.waiters.size > 0) {
      try {
        this.#arm(registration, false);
      } catch (error) {
        for (const w of registration.waiters) ready.push(w);
        this.#waiting -= registration.waiters.size;
        registration.waiters.clear();
        for (const w of ready) w.reject(error as Error);
        return;
      }
    }
    for (const w of ready) w.resolve(events);
  }
}

let threadReactor: Reactor | undefined;

/** This thread's reactor (the daemon and each worker have their own). */
export function reactor(): Reactor {
  threadReactor ??= new Reactor();
  return threadReactor;
}
