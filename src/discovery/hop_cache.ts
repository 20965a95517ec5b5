/**
 * A small cache with a bounded number of entries, each expiring on its own;
 * the least recently used entry goes first when it is full. The clock is
 * injected (tests pass their own).
 *
 * @module
 */

/** Options of a {@linkcode ExpiringCache}. */
export interface ExpiringCacheOptions {
  /** Entries held at most (default 256). */
  maxEntries?: number;
  /** Milliseconds now, monotonic (default `performance.now`). */
  now?: () => number;
}

/** Bounded least-recently-used cache whose entries expire. */
export class ExpiringCache<V> {
  readonly #entries = new Map<string, { value: V; expires: number }>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  /** Builds an empty cache. */
  constructor(options: ExpiringCacheOptions = {}) {
    const maxEntries = options.maxEntries ?? 256;
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`Cannot hold ${maxEntries} entries: at least 1`);
    }
    this.#maxEntries = maxEntries;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Entries held now (expired ones may still count until touched). */
  get size(): number {
    return this.#entries.size;
  }

  /** The value of `key`, unless missing or expired (an expired entry is dropped). */
  get(key: string): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    if (this.#now() >= entry.expires) return undefined;
    this.#entries.set(key, entry); // most recently used last
    return entry.value;
  }

  /** Stores `value` under `key` for `ttlMs`; evicts expired, then least recently used entries. */
  set(key: string, value: V, ttlMs: number): void {
    if (!(ttlMs > 0)) throw new RangeError(`Cannot cache for ${ttlMs} ms: must be positive`);
    const now = this.#now();
    this.#entries.delete(key);
    if (this.#entries.size >= this.#maxEntries) {
      for (const [k, e] of this.#entries) if (now >= e.expires) this.#entries.delete(k);
    }
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
    this.#entries.set(key, { value, expires: now + ttlMs });
  }

  /** Forgets `key`. */
  delete(key: string): void {
    this.#entries.delete(key);
  }
}
