/**
 * What `status` and `report` replies carry (as one line of JSON), and the
 * daemon's counters behind `status` and `--metrics`.
 *
 * @module
 */

/** Failure reason classes counted apart. */
export const FAILURE_CLASSES = [
  "timeout",
  "refused",
  "unreachable",
  "peer",
  "resources",
  "other",
] as const;
/** A failure reason class. */
export type FailureClass = typeof FAILURE_CLASSES[number];

/** Time-to-connect percentiles of the latest successes, milliseconds. */
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Counters of one technique (or of `auto`, `auto-udp`). */
export interface TechniqueCounters {
  attempts: number;
  ok: number;
  cancelled: number;
  failed: Record<FailureClass, number>;
  /** Of the latest successes (at most SAMPLE_SIZE); null before the first. */
  connectMs: Percentiles | null;
  /** For auto: which technique won, how often. */
  won?: Record<string, number>;
  /** Successes through a relay. */
  relayed: number;
}

/** The `status` reply. */
export interface DaemonStatus {
  version: string;
  pid: number;
  uptimeSecs: number;
  /** Clients connected now. */
  clients: number;
  /** Attempts in flight now. */
  attempts: number;
  /** Firewall set elements (guards) held now. */
  guards: number;
  techniques: Record<string, TechniqueCounters>;
  /** Each technique: true when it can run here, or why not. */
  available: Record<string, true | string>;
}

/** What the host's NAT does for one address family. */
export interface FamilyReport {
  /** The public address the discovery servers saw, or null. */
  public: string | null;
  /** How the NAT maps ports: preserving, consistent, delta+N, random, none (not NATed), or null. */
  mapping: string | null;
  /** The same for TCP flows. */
  tcpMapping: string | null;
  /** RFC 5780 behaviour, with a server that has OTHER-ADDRESS. */
  rfc5780: { mapping: string; filtering: string } | null;
  /** The public port equals the local one; null when unknown. */
  portPreservation: boolean | null;
  /** A packet to one's own public endpoint comes back; null when it cannot be tested. */
  hairpin: boolean | null;
  /** Hops to leave the host's own NATs and firewalls, or null. */
  hops: number | null;
  notes: string[];
}

/** The `report` reply. */
export interface NatReport {
  /** Discovery servers asked. */
  servers: string[];
  ipv4: FamilyReport;
  ipv6: FamilyReport;
  /** How long the report took. */
  ms: number;
}

/** Successes kept per technique for percentiles. */
export const SAMPLE_SIZE = 1024;

/** Sorts a failure reason into its class. */
export function failureClass(reason: string): FailureClass {
  const r = reason.toLowerCase();
  if (/timed out|timeout|etimedout|deadline/.test(r)) return "timeout";
  if (/refused|econnrefused|econnreset|reset/.test(r)) return "refused";
  if (/unreachable|ehostunreach|enetunreach|no route/.test(r)) return "unreachable";
  if (/too many|emfile|enfile|enomem|enobufs|quota|limit|eaddrinuse|in use/.test(r)) {
    return "resources";
  }
  if (/peer/.test(r)) return "peer";
  return "other";
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[index] ?? 0;
}

/** Percentiles of samples (nearest rank). */
export function percentiles(samples: readonly number[]): Percentiles | null {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? 0,
  };
}

interface Tally {
  attempts: number;
  ok: number;
  cancelled: number;
  relayed: number;
  failed: Record<FailureClass, number>;
  /** Ring of the latest success times. */
  samples: number[];
  next: number;
  won: Map<string, number>;
}

/** The daemon's attempt counters, by requested technique (`auto`, `auto-udp` for plans). */
export class AttemptCounters {
  readonly #tallies = new Map<string, Tally>();

  #tally(name: string): Tally {
    let tally = this.#tallies.get(name);
    if (tally === undefined) {
      tally = {
        attempts: 0,
        ok: 0,
        cancelled: 0,
        relayed: 0,
        failed: Object.fromEntries(FAILURE_CLASSES.map((c) => [c, 0])) as Record<
          FailureClass,
          number
        >,
        samples: [],
        next: 0,
        won: new Map(),
      };
      this.#tallies.set(name, tally);
    }
    return tally;
  }

  /** Makes `names` appear (with zeros) before any attempt. */
  declare(names: Iterable<string>): void {
    for (const name of names) this.#tally(name);
  }

  /** An attempt started. */
  started(name: string): void {
    this.#tally(name).attempts++;
  }

  /** An attempt connected after `ms`; `winner` is the technique that won an auto attempt. */
  succeeded(name: string, ms: number, winner?: string, relayed = false): void {
    const tally = this.#tally(name);
    tally.ok++;
    if (relayed) tally.relayed++;
    if (tally.samples.length < SAMPLE_SIZE) tally.samples.push(ms);
    else tally.samples[tally.next] = ms;
    tally.next = (tally.next + 1) % SAMPLE_SIZE;
    if (winner !== undefined) tally.won.set(winner, (tally.won.get(winner) ?? 0) + 1);
  }

  /** An attempt failed with `reason` (a cancel counts apart). */
  failed(name: string, reason: string): void {
    const tally = this.#tally(name);
    if (reason.startsWith("cancelled")) tally.cancelled++;
    else tally.failed[failureClass(reason)]++;
  }

  /** A snapshot of every counter. */
  snapshot(): Record<string, TechniqueCounters> {
    const out: Record<string, TechniqueCounters> = {};
    for (const [name, tally] of this.#tallies) {
      const counters: TechniqueCounters = {
        attempts: tally.attempts,
        ok: tally.ok,
        cancelled: tally.cancelled,
        failed: { ...tally.failed },
        connectMs: percentiles(tally.samples),
        relayed: tally.relayed,
      };
      if (tally.won.size > 0) counters.won = Object.fromEntries(tally.won);
      out[name] = counters;
    }
    return out;
  }
}
