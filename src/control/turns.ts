/**
 * Fair turns for the control connections: one client cannot delay another's
 * requests by pipelining its own.
 *
 * Each connection asks for a turn before it handles a request line, and
 * handles one line per turn. Turns are granted one at a time, each from its
 * own turn of the event loop (`setImmediate`), so between two requests the
 * daemon reads sockets, takes worker messages and runs timers. The turn goes
 * to the waiting connection that was served least recently (a connection
 * never served counts as served before everyone):
 *
 * - connections that always have a line waiting take turns round-robin;
 * - a connection asking once in a while (one request, then its reply) was
 *   served longer ago than every busy one, so it goes next;
 * - a waiting connection is served within as many turns as other
 *   connections wait, whatever they send: nobody starves.
 *
 * Without this, a connection whose socket always had data was read and
 * served from one promise chain that never gave the event loop a turn:
 * every other client waited until that client's pipelined requests ran out.
 *
 * ```
 *   turn(owner) ──► waiting ──(least recently served, one per loop turn)──► granted
 *                      │ signal aborted
 *                      ▼
 *                   rejected
 * ```
 *
 * @module
 */

/** How a scheduler asks for its next grant (default: `setImmediate`, the next loop turn). */
export type Defer = (grant: () => void) => void;

interface Waiter {
  owner: object;
  resolve(): void;
  reject(reason: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/** Options of a {@linkcode TurnScheduler}. */
export interface TurnSchedulerOptions {
  /** Runs the next grant later (tests step through grants); default `setImmediate`. */
  defer?: Defer;
}

const nextLoopTurn: Defer = (grant) => {
  setImmediate(grant);
};

/** Grants turns to owners (connections), one at a time, least recently served first. */
export class TurnScheduler {
  readonly #defer: Defer;
  /** Waiting owners in the order they asked. */
  #waiting: Waiter[] = [];
  /** The turn number at which each owner was served last. */
  readonly #lastServed = new WeakMap<object, number>();
  #turns = 0;
  #scheduled = false;

  /** A scheduler; turns are granted once asked for. */
  constructor(options: TurnSchedulerOptions = {}) {
    this.#defer = options.defer ?? nextLoopTurn;
  }

  /** Owners waiting for a turn now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Resolves when `owner` may handle one request; rejects with the signal's
   * reason when `signal` aborts first. An owner asks for one turn at a time.
   */
  turn(owner: object, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        owner,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(signal?.reason);
        },
      };
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.#waiting.push(waiter);
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#scheduled || this.#waiting.length === 0) return;
    this.#scheduled = true;
    this.#defer(() => this.#grant());
  }

  #grant(): void {
    this.#scheduled = false;
    let best = -1;
    let oldest = Infinity;
    for (let i = 0; i < this.#waiting.length; i++) {
      const owner = (this.#waiting[i] as Waiter).owner;
      const last = this.#lastServed.get(owner) ?? -1;
      if (last < oldest) {
        oldest = last;
        best = i;
      }
    }
    if (best >= 0) {
      const [waiter] = this.#waiting.splice(best, 1) as [Waiter];
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      this.#lastServed.set(waiter.owner, ++this.#turns);
      waiter.resolve();
    }
    this.#schedule();
  }
}
