/**
 * The latest `endpoint` answer per protocol and local port, so that an `auto`
 * attempt from that port can tell the peer what its NAT does without probing
 * again. Bounded in size and age.
 *
 * @module
 */

import type { Protocol } from "../control/codec.ts";
import type { KnownEndpoint } from "../auto/local.ts";

/** Options of the cache (tests inject the clock). */
export interface EndpointCacheOptions {
  /** Entries kept at most (oldest dropped first; default 4096). */
  maxEntries?: number;
  /** Milliseconds an answer stays valid (default 600000: NAT bindings change). */
  maxAgeMs?: number;
  now?: () => number;
}

/** Endpoint answers by protocol and local port. */
export class EndpointCache {
  readonly #entries = new Map<string, { known: KnownEndpoint; at: number }>();
  readonly #max: number;
  readonly #maxAge: number;
  readonly #now: () => number;

  /** Builds an empty cache. */
  constructor(options: EndpointCacheOptions = {}) {
    this.#max = options.maxEntries ?? 4096;
    this.#maxAge = options.maxAgeMs ?? 600_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Remembers the answer for `port`. */
  set(protocol: Protocol, port: number, known: KnownEndpoint): void {
    const key = `${protocol}/${port}`;
    this.#entries.delete(key);
    this.#entries.set(key, { known, at: this.#now() });
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
  }

  /** The answer for `port`, if it is recent enough. */
  get(protocol: Protocol, port: number): KnownEndpoint | undefined {
    const key = `${protocol}/${port}`;
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (this.#now() - entry.at > this.#maxAge) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.known;
  }

  /** Entries held. */
  get size(): number {
    return this.#entries.size;
  }
}
