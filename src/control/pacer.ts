/**
 * Pacing of attempt starts: the daemon admits at most `rate` new attempts a
 * second (a token bucket that holds up to `burst`), shared between clients
 * fairly, so that however many attempts other clients start, a client's
 * requests find a daemon with time for them.
 *
 * Why: every attempt costs the daemon's event loop and a technique worker
 * a fraction of a millisecond each (requests, worker messages, firewall
 * batches, replies). Turns (turns.ts) order the requests, but a client that
 * keeps hundreds of attempts starting (one every time one of its attempts
 * ends) kept a two-core machine busy on its behalf: measured, the daemon's
 * main thread was busy 55% of the time and waited for a CPU another 40%,
 * and a bystander's `status` took 15-17 ms at p99. Bounding the starts
 * bounds that work for all clients together.
 *
 * A waiting token goes to the client served least recently (as turns.ts
 * does for requests). Clients that always wait share the tokens
 * round-robin; a client that asks less often than once a round (less than
 * its fair share) has been served longer ago than every one of them and
 * gets the next token; nobody starves. A start that finds a token and
 * nobody waiting goes through at once (no timer, no turn of the event
 * loop): an idle daemon adds no latency.
 *
 * ```
 *   take(owner) ── token free, nobody waiting ──► granted at once
 *        │
 *        └──► waiting ── (a token each 1/rate s, least recently served first) ──► granted
 *                │ signal aborted
 *                ▼
 *             rejected
 * ```
 *
 * @module
 */

interface Waiter {
  owner: object;
  resolve(): void;
  reject(reason: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

/** Options of a {@linkcode StartPacer}. */
export interface StartPacerOptions {
  /** Starts admitted per second, on average. */
  rate: number;
  /** Starts admitted at once after a quiet spell (the bucket's size). */
  burst: number;
  /** The clock in milliseconds (tests step it); default `performance.now`. */
  now?: () => number;
}

/** Admits attempt starts at a bounded rate, fairly between owners (client connections). */
export class StartPacer {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;
  #waiting: Waiter[] = [];
  readonly #lastServed = new WeakMap<object, number>();
  #served = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** A pacer with a full bucket. Throws RangeError unless rate > 0 and burst >= 1. */
  constructor(options: StartPacerOptions) {
    if (!(options.rate > 0) || !Number.isFinite(options.rate)) {
      throw new RangeError(`start rate must be a positive number, not ${options.rate}`);
    }
    if (!(options.burst >= 1) || !Number.isFinite(options.burst)) {
      throw new RangeError(`start burst must be at least 1, not ${options.burst}`);
    }
    this.#rate = options.rate;
    this.#burst = options.burst;
    this.#now = options.now ?? (() => performance.now());
    this.#tokens = options.burst;
    this.#at = this.#now();
  }

  /** Owners waiting for a token now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Resolves when `owner` may start one attempt; rejects with the signal's
   * reason when `signal` aborts first. An owner waits for one token at a time.
   */
  take(owner: object, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    this.#refill();
    if (this.#waiting.length === 0 && this.#tokens >= 1) {
      this.#tokens -= 1;
      this.#lastServed.set(owner, ++this.#served);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        owner,
        resolve,
        reject,
        signal,
        onAbort: () => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) this.#waiting.splice(at, 1);
          if (this.#waiting.length === 0) this.#stop();
          reject(signal?.reason);
        },
      };
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.#waiting.push(waiter);
      this.#schedule();
    });
  }

  /** Stops the timer; waiters stay (a stopped daemon cancels them through their signals). */
  close(): void {
    this.#stop();
  }

  #refill(): void {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#rate) / 1000);
    this.#at = now;
  }

  #stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#waiting.length === 0) return;
    const ms = Math.max(0, ((1 - this.#tokens) * 1000) / this.#rate);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#grant();
    }, ms);
  }

  #grant(): void {
    this.#refill();
    while (this.#tokens >= 1 && this.#waiting.length > 0) {
      let best = 0;
      let oldest = Infinity;
      for (let i = 0; i < this.#waiting.length; i++) {
        const last = this.#lastServed.get((this.#waiting[i] as Waiter).owner) ?? -1;
        if (last < oldest) {
          oldest = last;
          best = i;
        }
      }
      const [waiter] = this.#waiting.splice(best, 1) as [Waiter];
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      this.#lastServed.set(waiter.owner, ++this.#served);
      this.#tokens -= 1;
      waiter.resolve();
    }
    this.#schedule();
  }
}
