/**
 * The rendezvous server's policy against floods: counters per source
 * address (connections, registrations, UDP names), token buckets (notify
 * rate) and a backoff sleep. Bookkeeping with an injected clock, no I/O.
 *
 * @module
 */

import type { SocketAddress } from "../../ffi/structs.ts";

/** Milliseconds since some fixed point; `performance.now` unless a test injects one. */
export type Clock = () => number;

/**
 * The key that per-address limits count under: the IPv4 address, or the
 * /64 prefix of an IPv6 address (one subscriber usually holds a whole /64,
 * so counting single IPv6 addresses would limit nothing).
 */
export function addressKey(address: SocketAddress): string {
  if (address.family === "unix") return "unix";
  if (address.family === "inet") return address.address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address.address);
  if (mapped?.[1] !== undefined) return mapped[1];
  const [head = "", tail = ""] = address.address.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = address.address.includes("::")
    ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":") + "::/64";
}

/**
 * Counts of something held per source address, each capped at `max`. An
 * address's entry is deleted when its count returns to zero, so the map
 * holds only addresses that hold something now.
 */
export class AddressCounter {
  readonly #max: number;
  readonly #counts = new Map<string, number>();

  /** A counter allowing `max` per address. */
  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`Cannot limit to ${max} per address: expected a whole number >= 1`);
    }
    this.#max = max;
  }

  /** The cap per address. */
  get max(): number {
    return this.#max;
  }

  /** Addresses holding at least one. */
  get size(): number {
    return this.#counts.size;
  }

  /** What `key` holds now. */
  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  /** Takes one for `key`; false (and nothing taken) when it is at the cap. */
  acquire(key: string): boolean {
    const n = this.#counts.get(key) ?? 0;
    if (n >= this.#max) return false;
    this.#counts.set(key, n + 1);
    return true;
  }

  /** Gives one back for `key`. */
  release(key: string): void {
    const n = this.#counts.get(key) ?? 0;
    if (n <= 1) this.#counts.delete(key);
    else this.#counts.set(key, n - 1);
  }
}

/**
 * A token bucket: `burst` tokens at most, refilled at `perSecond`. `take()`
 * spends one token or reports that none is left.
 */
export class TokenBucket {
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #clock: Clock;
  #tokens: number;
  #updated: number;

  /** A full bucket. */
  constructor(perSecond: number, burst: number, clock: Clock) {
    if (!(perSecond > 0) || !(burst >= 1)) {
      throw new RangeError(
        `Cannot make a token bucket of ${perSecond}/s, burst ${burst}: both must be positive`,
      );
    }
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#clock = clock;
    this.#tokens = burst;
    this.#updated = clock();
  }

  /** Spends one token; false when the bucket is empty. */
  take(): boolean {
    const now = this.#clock();
    const refill = ((now - this.#updated) / 1000) * this.#perSecond;
    this.#tokens = Math.min(this.#burst, this.#tokens + Math.max(0, refill));
    this.#updated = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (backoff that stop() cuts short). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
