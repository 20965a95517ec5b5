/**
 * Supervision of technique workers: one Deno Worker per technique (started on
 * first use, hosting all of that technique's attempts), the attempt keys
 * routed to it, a daemon-side deadline per attempt, the ledger of fds each
 * worker holds so that a crashed worker leaks nothing, and the firewall guards
 * of each attempt, which the daemon installs for the worker and removes when
 * the attempt ends, before its outcome is reported.
 *
 * @module
 */

import { fdIdentity, type FdKind } from "../../ffi/fd_ledger.ts";
import type { FirewallService } from "../firewall/service.ts";
import { assertGuard } from "../firewall/guards.ts";
import { plannedGuards } from "../techniques/tcp_flow_guard.ts";
import { close as closeFd, trimHeap, write } from "../../ffi/syscalls.ts";
import type { TechniqueName } from "../control/codec.ts";
import type { Logger } from "../log.ts";
import type { AttemptSpec, FromWorker, ToWorker } from "../techniques/protocol.ts";
import type { TechniqueEntry } from "../techniques/registry.ts";
import { collectGarbage } from "../techniques/heap.ts";

/** What the daemon learns about one attempt. Exactly one of connected/failed is called, once. */
export interface AttemptEvents {
  progress(data: string): void;
  /**
   * The daemon now owns `fd` and must close it after passing it on; `via` is the TURN server
   * of a relayed connection.
   */
  connected(fd: number, local: string, remote: string, via?: string): void;
  failed(reason: string): void;
}

/** The subset of Worker the supervisor uses (a real Worker in production). */
export interface WorkerLike {
  postMessage(message: ToWorker): void;
  terminate(): void;
  onmessage: ((event: MessageEvent<FromWorker>) => void) | null;
  onerror: ((event: ErrorEvent) => void) | null;
  onmessageerror: ((event: MessageEvent) => void) | null;
}

interface Running {
  events: AttemptEvents;
  technique: TechniqueName;
  /** The client's uid (guards are capped per uid). */
  uid: number;
  /** Milliseconds a guard of this attempt may live. */
  guardTtlMs: number;
  timer: ReturnType<typeof setTimeout>;
  /** Set once cancelled: the reason, reported when the worker confirms (or its grace ends). */
  cancelling?: string;
}

interface Hosted {
  worker: WorkerLike;
  keys: Set<number>;
  /** fds the worker owns right now, with their kind and identity (see fdIdentity). */
  fds: Map<number, { kind: FdKind; identity?: string }>;
  /** Stops the worker once it has had no attempt for idleMs. */
  idle?: ReturnType<typeof setTimeout>;
  /** Relayed connections whose TURN allocations the worker keeps: it is not idle while any live. */
  holding: number;
}

/**
 * Work the daemon does for its workers per turn of its event loop (a worker message, the answer
 * to a guard request, or the report of an attempt whose guards are gone); the rest waits, in
 * order, for the next turns.
 * Deno delivers every message a worker has queued in one turn, and a firewall batch ends the
 * attempts of all its removals at once: after a burst of attempts that was hundreds of log
 * records, progress lines, guard requests and replies in one go, and every client's request
 * waited behind them (control requests take one turn each, see src/control/turns.ts).
 */
const WORK_PER_TURN = 8;

/** Options of the supervisor. */
export interface WorkersOptions {
  registry: Readonly<Record<TechniqueName, TechniqueEntry>>;
  log: Logger;
  /** Extra milliseconds the daemon waits past an attempt's own timeout (default 2000). */
  graceMs?: number;
  /**
   * Milliseconds a worker with no attempt lives on (default 30000): a worker
   * is an isolate with its own heap, and stopping it returns that memory.
   */
  idleMs?: number;
  /**
   * Milliseconds without any attempt after which the daemon's isolate collects its garbage
   * and the C heap is trimmed (default 5000): a burst's garbage would otherwise stay resident.
   */
  collectAfterMs?: number;
  /** Installs the attempts' guards; without it, guard requests fail. */
  firewall?: FirewallService;
  /** Makes a worker (tests inject failures here); default: a module Worker. */
  spawn?: (url: URL) => WorkerLike;
}

const defaultSpawn = (url: URL): WorkerLike =>
  new Worker(url, {
    type: "module",
    name: url.pathname.split("/").pop() ?? "technique",
  }) as unknown as WorkerLike;

/** One worker per technique, many attempts each. */
export class TechniqueWorkers {
  readonly #options: WorkersOptions;
  readonly #spawn: (url: URL) => WorkerLike;
  readonly #hosted = new Map<TechniqueName, Hosted>();
  readonly #running = new Map<number, Running>();
  #nextKey = 1;
  readonly #pendingCleanup = new Set<Promise<void>>();
  #closed = false;
  /** Work waiting for a later turn of the event loop (see WORK_PER_TURN), in order. */
  #backlog: (() => void)[] = [];
  #draining = false;
  /** Work done in this turn of the event loop, and whether its reset is scheduled. */
  #doneThisTurn = 0;
  #turnResetArmed = false;
  /** Collects the garbage once no attempt has run for collectAfterMs. */
  #collect: ReturnType<typeof setTimeout> | undefined;

  /** Builds the supervisor; workers start on first use. */
  constructor(options: WorkersOptions) {
    this.#options = options;
    this.#spawn = options.spawn ?? defaultSpawn;
  }

  /** Number of attempts running in workers. */
  get running(): number {
    return this.#running.size;
  }

  /** Number of live workers. */
  get workers(): number {
    return this.#hosted.size;
  }

  /** Starts an attempt of a client of `uid`; returns its key for peer() and cancel(). */
  start(spec: AttemptSpec, events: AttemptEvents, uid = 0): number {
    if (this.#closed) throw new Error("Cannot start attempt: the daemon is shutting down");
    const hosted = this.#host(spec.technique);
    clearTimeout(hosted.idle);
    clearTimeout(this.#collect);
    const key = this.#nextKey++;
    const grace = this.#options.graceMs ?? 2000;
    const timer = setTimeout(() => {
      this.#options.log.warn("technique worker missed the attempt deadline", { attempt: spec.id });
      this.cancel(key, `no answer from the ${spec.technique} worker within ${spec.timeoutMs} ms`, {
        immediate: true,
      });
    }, spec.timeoutMs + grace);
    // A guard outlives its attempt by a second at most, even if punchd is killed.
    const guardTtlMs = spec.timeoutMs + grace + 1000;
    const running: Running = { events, technique: spec.technique, uid, guardTtlMs, timer };
    this.#running.set(key, running);
    hosted.keys.add(key);
    const plan = this.#options.firewall === undefined
      ? null
      : this.#options.registry[spec.technique].technique.guardPlan?.(spec) ?? null;
    if (plan !== null && this.#options.firewall !== undefined) {
      // The guards go in while the start travels to the worker (one batch, as the worker's
      // request would be); their handles follow the start, and the worker answers the
      // technique's request for them itself (worker_host.ts): no round trip to the daemon.
      const { isns, guards } = plannedGuards(spec, plan);
      spec = { ...spec, isns };
      this.#options.firewall.addAll(key, uid, guards, guardTtlMs).then(
        (handles) => hosted.worker.postMessage({ type: "planned", key, guards, handles }),
        (error) =>
          hosted.worker.postMessage({
            type: "planned",
            key,
            guards,
            handles: [],
            error: (error as Error).message,
          }),
      );
    }
    hosted.worker.postMessage({ type: "start", key, spec, logLevel: this.#options.log.level });
    return key;
  }

  /** Forwards peer data to a running attempt; false when it is not running. */
  peer(key: number, data: string): boolean {
    const running = this.#running.get(key);
    if (running === undefined) return false;
    this.#hosted.get(running.technique)?.worker.postMessage({ type: "peer", key, data });
    return true;
  }

  /**
   * Cancels an attempt. Its `failed` event ("cancelled: REASON") fires once
   * the worker has released what the attempt held (so a client that sees the
   * reply sees the firewall as before), or after the grace period if the
   * worker does not answer; with `immediate`, at once. A success the worker
   * reports meanwhile is dropped and its fd closed.
   */
  cancel(key: number, reason: string, { immediate = false } = {}): void {
    const running = this.#running.get(key);
    if (running === undefined) return;
    if (running.cancelling === undefined) {
      running.cancelling = reason;
      this.#hosted.get(running.technique)?.worker.postMessage({ type: "cancel", key, reason });
    }
    const report = () =>
      this.#finish(key, (r) => r.events.failed(`cancelled: ${running.cancelling}`));
    if (immediate) return void report();
    clearTimeout(running.timer);
    running.timer = setTimeout(report, this.#options.graceMs ?? 2000);
  }

  /** Resolves once the firewall guards of ended attempts are removed. */
  async cleaned(): Promise<void> {
    while (this.#pendingCleanup.size > 0) {
      const all = [...this.#pendingCleanup];
      await Promise.allSettled(all);
      for (const p of all) this.#pendingCleanup.delete(p);
    }
  }

  /** Cancels everything, terminates every worker and closes the fds they held. */
  shutdown(reason = "daemon shutting down"): void {
    this.#closed = true;
    clearTimeout(this.#collect);
    for (const key of [...this.#running.keys()]) this.cancel(key, reason, { immediate: true });
    for (const technique of [...this.#hosted.keys()]) this.#retire(technique, reason);
  }

  /**
   * Ends an attempt: forgets it at once, removes its guards and reports.
   * A failure is reported once the guards are gone, so a client that sees
   * it sees the firewall as before (and can try something else on the same
   * ports at once). A success (`guardsAfter`) is reported first and the
   * guards go right after: they only ever drop segments of a handshake
   * that is complete by then (SYN-ACKs, RSTs, time-exceeded errors), and
   * taking them off the success path saves a firewall batch and two turns
   * of the event loop on every connection.
   */
  #finish(key: number, report: (running: Running) => void, guardsAfter = false): void {
    const running = this.#running.get(key);
    if (running === undefined) return;
    this.#running.delete(key);
    clearTimeout(running.timer);
    const hosted = this.#hosted.get(running.technique);
    hosted?.keys.delete(key);
    if (hosted !== undefined) this.#idleLater(running.technique, hosted);
    if (this.#running.size === 0) this.#collectLater();
    const firewall = this.#options.firewall;
    if (firewall === undefined || !firewall.holds(key)) return report(running);
    let released: Promise<void>;
    if (guardsAfter) {
      try {
        report(running);
      } finally {
        released = firewall.release(key);
      }
    } else {
      released = firewall.release(key).then(() =>
        new Promise<void>((resolve) =>
          this.#soon(() => {
            try {
              report(running);
            } finally {
              resolve();
            }
          })
        )
      ).catch((error) =>
        this.#options.log.error("cannot report an attempt's end", {
          error: (error as Error).message,
        })
      );
    }
    this.#pendingCleanup.add(released);
    void released.finally(() => this.#pendingCleanup.delete(released));
  }

  /**
   * Once no attempt has run for collectAfterMs: a full garbage collection of this isolate, then
   * the C heap's free pages back to the kernel.
   */
  #collectLater(): void {
    clearTimeout(this.#collect);
    if (this.#closed) return;
    this.#collect = setTimeout(() => {
      if (this.#running.size > 0 || this.#closed) return;
      this.#collectNow();
      trimHeap();
    }, this.#options.collectAfterMs ?? 5000);
  }

  /**
   * A full collection stops this isolate for its duration: 100-400 ms for a 15 MB heap on the
   * loaded 2-core lab machine, which is why the daemon collects only once it is idle (the
   * control socket must answer within milliseconds while attempts run).
   */
  #collectNow(): void {
    const started = performance.now();
    if (!collectGarbage()) return;
    this.#options.log.debug("collected garbage", {
      ms: Math.round((performance.now() - started) * 10) / 10,
    });
  }

  /** Stops `hosted` after idleMs without attempts or relayed connections it keeps. */
  #idleLater(technique: TechniqueName, hosted: Hosted): void {
    if (hosted.keys.size > 0 || hosted.holding > 0) return;
    clearTimeout(hosted.idle);
    hosted.idle = setTimeout(() => {
      if (hosted.keys.size > 0 || hosted.holding > 0) return;
      if (this.#hosted.get(technique) !== hosted) return;
      this.#options.log.info("technique worker stopped: idle", { technique });
      this.#retire(technique, "idle");
      // The isolate's thread is gone: give the C heap's free pages back too.
      setTimeout(trimHeap, 100);
    }, this.#options.idleMs ?? 30_000);
  }

  #host(technique: TechniqueName): Hosted {
    const existing = this.#hosted.get(technique);
    if (existing !== undefined) return existing;
    const worker = this.#spawn(this.#options.registry[technique].workerUrl);
    const hosted: Hosted = { worker, keys: new Set(), fds: new Map(), holding: 0 };
    worker.onmessage = (event) =>
      this.#soon(() => {
        // A retired worker's messages go with it, as if it had never sent them.
        if (this.#hosted.get(technique) === hosted) this.#receive(technique, hosted, event.data);
      });
    worker.onerror = (event) => {
      event.preventDefault();
      this.#crash(technique, hosted, event.message || "uncaught error");
    };
    worker.onmessageerror = () => this.#crash(technique, hosted, "undecodable message");
    this.#hosted.set(technique, hosted);
    this.#options.log.info("technique worker started", { technique });
    return hosted;
  }

  /** Runs `task` now, or after the work waiting, within WORK_PER_TURN per turn of the loop. */
  #soon(task: () => void): void {
    if (this.#backlog.length === 0 && this.#doneThisTurn < WORK_PER_TURN) {
      this.#count();
      return task();
    }
    this.#backlog.push(task);
    if (this.#draining) return;
    this.#draining = true;
    setImmediate(this.#drain);
  }

  #count(): void {
    this.#doneThisTurn++;
    if (this.#turnResetArmed) return;
    this.#turnResetArmed = true;
    setImmediate(() => {
      this.#turnResetArmed = false;
      this.#doneThisTurn = 0;
    });
  }

  readonly #drain = (): void => {
    const batch = this.#backlog.splice(0, WORK_PER_TURN);
    let done = 0;
    try {
      for (const task of batch) {
        done++;
        this.#count();
        task();
      }
    } finally {
      // A task that threw leaves the rest of its batch first in line.
      if (done < batch.length) this.#backlog.unshift(...batch.slice(done));
      if (this.#backlog.length > 0) setImmediate(this.#drain);
      else this.#draining = false;
    }
  };

  #receive(technique: TechniqueName, hosted: Hosted, message: FromWorker): void {
    switch (message.type) {
      case "log":
        this.#options.log.log(message.record.level, message.record.message, message.record.fields);
        return;
      case "fd":
        if (message.kind === null) hosted.fds.delete(message.fd);
        else {
          hosted.fds.set(message.fd, {
            kind: message.kind,
            ...(message.identity === undefined ? {} : { identity: message.identity }),
          });
        }
        return;
      case "guard":
      case "unguard":
        this.#guard(hosted, message);
        return;
      case "holding":
        hosted.holding = Math.max(0, Math.floor(message.count));
        this.#idleLater(technique, hosted);
        return;
      case "progress": {
        const running = this.#running.get(message.key);
        if (running?.cancelling === undefined) running?.events.progress(message.data);
        return;
      }
      case "connected": {
        if (!this.#running.has(message.key)) {
          // Cancelled or timed out while the worker finished: nobody wants it.
          closeQuietly(message.fd);
          return;
        }
        const cancelling = this.#running.get(message.key)?.cancelling;
        this.#finish(message.key, (running) => {
          if (running.cancelling === undefined) {
            running.events.connected(message.fd, message.local, message.remote, message.via);
          } else {
            closeQuietly(message.fd);
            running.events.failed(`cancelled: ${running.cancelling}`);
          }
        }, cancelling === undefined);
        return;
      }
      case "failed":
        this.#finish(message.key, (running) =>
          running.events.failed(
            running.cancelling === undefined ? message.reason : `cancelled: ${running.cancelling}`,
          ));
        return;
    }
    void technique;
  }

  /** Installs guards for a running attempt of this worker, or removes one, and answers. */
  #guard(
    hosted: Hosted,
    message: Extract<FromWorker, { type: "guard" | "unguard" }>,
  ): void {
    const answer = (handles: number[], error?: string) => {
      const reply: ToWorker = { type: "guarded", request: message.request, handles };
      if (error !== undefined) reply.error = error;
      hosted.worker.postMessage(reply);
    };
    const running = this.#running.get(message.key);
    const firewall = this.#options.firewall;
    if (running === undefined || !hosted.keys.has(message.key)) {
      return answer([], "Cannot change the firewall: the attempt is not running");
    }
    if (firewall === undefined) return answer([], "Cannot change the firewall: it is unavailable");
    if (message.type === "unguard") {
      void firewall.remove(message.key, message.handle).then(() => this.#soon(() => answer([])));
      return;
    }
    try {
      if (!Array.isArray(message.guards) || message.guards.length === 0) {
        throw new TypeError("a guard request names no guard");
      }
      for (const guard of message.guards) assertGuard(guard);
    } catch (error) {
      return answer([], (error as Error).message);
    }
    // A batch answers all its guards at once: the answers take their share of the turns too.
    firewall.addAll(message.key, running.uid, message.guards, running.guardTtlMs).then(
      (handles) => this.#soon(() => answer(handles)),
      (error) => this.#soon(() => answer([], (error as Error).message)),
    );
  }

  #crash(technique: TechniqueName, hosted: Hosted, why: string): void {
    if (this.#hosted.get(technique) !== hosted) return;
    this.#options.log.error("technique worker crashed", {
      technique,
      error: why,
      attempts: hosted.keys.size,
    });
    for (const key of [...hosted.keys]) {
      this.#finish(key, (running) => running.events.failed(`${technique} worker crashed`));
    }
    this.#retire(technique, "crashed");
  }

  #retire(technique: TechniqueName, why: string): void {
    const hosted = this.#hosted.get(technique);
    if (hosted === undefined) return;
    this.#hosted.delete(technique);
    clearTimeout(hosted.idle);
    hosted.worker.terminate();
    // Wake the worker's reactor first: its epoll_wait holds a runtime thread
    // until an event arrives, even after its fds are closed.
    // Only fds that are still the files the worker opened: a worker that closed an fd just
    // before it was terminated may not have told us yet, and the number may already belong to
    // someone else (an nft pipe of the firewall queue was closed this way, and shutdown hung).
    const own = [...hosted.fds].filter(([fd, entry]) =>
      entry.identity === undefined || fdIdentity(fd) === entry.identity
    );
    for (const [fd, entry] of own) if (entry.kind === "wake") wake(fd);
    for (const [fd] of own) closeQuietly(fd);
    const sockets = own.filter(([, entry]) => entry.kind === "socket").length;
    if (sockets > 0) {
      this.#options.log.warn("closed sockets a retired worker held", { technique, sockets, why });
    }
    hosted.fds.clear();
  }
}

function wake(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  try {
    write(fd, one);
  } catch {
    // Not writable any more: its thread is gone already.
  }
}

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed: nothing left to release.
  }
}
