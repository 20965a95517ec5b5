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
 * A waiting token goes to the client served least recently: the pacer is a
 * token bucket that feeds turns.ts's scheduler, whose grants it defers
 * until a token is there. Clients that always wait share the tokens
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

import { TurnScheduler } from "./turns.ts";

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
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Least recently served first; each grant waits for a token (#whenToken). */
  readonly #turns = new TurnScheduler({ defer: (grant) => this.#whenToken(grant) });

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
    return this.#turns.waiting;
  }

  /**
   * Resolves when `owner` may start one attempt; rejects with the signal's
   * reason when `signal` aborts first. An owner waits for one token at a time.
   */
  take(owner: object, signal?: AbortSignal): Promise<void> {
    return this.#turns.turn(owner, signal);
  }

  /** Stops the timer; waiters stay (a stopped daemon cancels them through their signals). */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Runs `grant` at once when a token is there (it is taken), else once one
   * has come. A grant that finds nobody waiting any more (they all aborted)
   * takes no token.
   */
  #whenToken(grant: () => void): void {
    if (this.#turns.waiting === 0) return grant();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + ((this.#now() - this.#at) * this.#rate) / 1000,
    );
    this.#at = this.#now();
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return grant();
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#whenToken(grant);
    }, ((1 - this.#tokens) * 1000) / this.#rate);
  }
}
