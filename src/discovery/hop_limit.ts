/**
 * The hop limit (TTL) that crosses the host's own NATs and firewalls toward
 * a destination but no further: a fixed value when the operator gave one,
 * otherwise discovered by probing (hop_probe.ts) and cached per route.
 *
 * ```
 *  fixed? ──yes──► fixed
 *    │no
 *  cached? ──yes──► cached answer
 *    │no
 *  probe (shared by concurrent callers) ──► max(MIN_HOP_LIMIT, first outside hop)
 *                                        └─► DEFAULT_HOP_LIMIT when unknown
 * ```
 *
 * @module
 */

import { ExpiringCache } from "./hop_cache.ts";
import { type HopDiscovery, type HopProbeOptions, type HopRoute, probeHops } from "./hop_probe.ts";

export type { HopDiscovery, HopRoute };

/** The hop limit used when discovery finds nothing: crosses one NAT, dies at the next router. */
export const DEFAULT_HOP_LIMIT = 2;
/**
 * The smallest discovered hop limit: the first router is the host's own
 * gateway, where a NAT or firewall usually sits even when it answers from a
 * public address (an IPv6 CPE firewall does).
 */
export const MIN_HOP_LIMIT = 2;

/** The hop limit to use and where it came from. */
export interface HopLimitChoice {
  hopLimit: number;
  how: "fixed" | "discovered" | "cached" | "default";
  /** One line for logs. */
  reason: string;
}

/** Options of a {@linkcode HopFinder}. */
export interface HopFinderOptions {
  /** The cache of discoveries (default: 256 routes). */
  cache?: ExpiringCache<HopDiscovery>;
  /** How a route is probed (default {@linkcode probeHops} with `probeOptions`). */
  probe?: (route: HopRoute, signal: AbortSignal) => Promise<HopDiscovery>;
  /** Tunables of the default probe. */
  probeOptions?: HopProbeOptions;
  /** Milliseconds a found answer stays cached (default 10 minutes). */
  knownMs?: number;
  /** Milliseconds an unknown answer stays cached (default 30 s), so that a failing route is not probed on every attempt. */
  unknownMs?: number;
}

/** Finds and caches hop limits per route; one per worker (or daemon). */
export class HopFinder {
  readonly #cache: ExpiringCache<HopDiscovery>;
  readonly #probe: (route: HopRoute, signal: AbortSignal) => Promise<HopDiscovery>;
  readonly #knownMs: number;
  readonly #unknownMs: number;
  readonly #inFlight = new Map<string, Promise<HopDiscovery>>();

  /** Builds a finder with an empty cache (or the one given). */
  constructor(options: HopFinderOptions = {}) {
    this.#cache = options.cache ?? new ExpiringCache<HopDiscovery>();
    const probeOptions = options.probeOptions ?? {};
    this.#probe = options.probe ?? ((route, signal) => probeHops(route, signal, probeOptions));
    this.#knownMs = options.knownMs ?? 600_000;
    this.#unknownMs = options.unknownMs ?? 30_000;
  }

  /**
   * The hop limit toward `route.destination`: `fixed` when given, else the
   * discovered one (see the module comment). Rejects only when `signal`
   * aborts.
   */
  async hopLimit(
    fixed: number | undefined,
    route: HopRoute,
    signal: AbortSignal,
  ): Promise<HopLimitChoice> {
    if (fixed !== undefined) return { hopLimit: fixed, how: "fixed", reason: "configured" };
    const { discovery, cached } = await this.discover(route, signal);
    if (discovery.firstOutside === null) {
      return { hopLimit: DEFAULT_HOP_LIMIT, how: "default", reason: discovery.reason };
    }
    const hopLimit = Math.max(MIN_HOP_LIMIT, discovery.firstOutside);
    const floor = hopLimit > discovery.firstOutside ? ` (at least ${MIN_HOP_LIMIT})` : "";
    return { hopLimit, how: cached ? "cached" : "discovered", reason: discovery.reason + floor };
  }

  /** The discovery of `route`, from the cache or probed now (concurrent callers share a probe). */
  async discover(
    route: HopRoute,
    signal: AbortSignal,
  ): Promise<{ discovery: HopDiscovery; cached: boolean }> {
    const key = `${route.source}>${route.destination}`;
    const hit = this.#cache.get(key);
    if (hit !== undefined) return { discovery: hit, cached: true };
    const shared = this.#inFlight.get(key);
    if (shared !== undefined) {
      try {
        return { discovery: await shared, cached: true };
      } catch {
        if (signal.aborted) throw signal.reason;
        // The caller that probed went away; probe again for this one.
      }
    }
    const probing = this.#probe(route, signal);
    this.#inFlight.set(key, probing);
    try {
      const discovery = await probing;
      const ttl = discovery.firstOutside === null ? this.#unknownMs : this.#knownMs;
      this.#cache.set(key, discovery, ttl);
      return { discovery, cached: false };
    } finally {
      if (this.#inFlight.get(key) === probing) this.#inFlight.delete(key);
    }
  }
}
