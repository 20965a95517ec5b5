/**
 * The one message interface between the daemon and a technique worker.
 *
 * Daemon to worker: `start` an attempt, deliver `peer` data, `cancel` it.
 * Worker to daemon: `progress` to forward to the peer, `connected` with the
 * socket's fd (process wide; the daemon now owns it), `failed` with a
 * client-facing reason, `log` records, `fd` ledger entries (kind null: released) so that the
 * daemon can close a crashed worker's sockets, and `guard`/`unguard` requests for the firewall,
 * which the daemon answers with `guarded` (the daemon owns every guard: it removes an attempt's
 * guards when the attempt ends, however it ends).
 *
 * ```
 *  start ──► running ──progress*──► connected | failed
 *               │  ▲                      ▲
 *        cancel │  └── peer data          │
 *               └──────────────────────────┘ (failed: cancelled)
 * ```
 *
 * @module
 */

import type { Endpoints, TechniqueName } from "../control/codec.ts";
import type { LogRecord } from "../log.ts";
import type { FdKind } from "../../ffi/fd_ledger.ts";
import type { Guard } from "../firewall/guards.ts";

/** Which side of an attempt this host is. */
export type Role = "initiate" | "respond";

/** Everything a technique needs to run one attempt. */
export interface AttemptSpec extends Endpoints {
  technique: TechniqueName;
  role: Role;
  /** The client's attempt ID (for logs). */
  id: string;
  /** The daemon's number of the client connection (for logs). */
  client: number;
  /** The initiator's progress data (respond only). */
  extra?: string;
  /** Milliseconds the attempt may take. */
  timeoutMs: number;
  /**
   * The ISNs of the attempt's flows, one per destination port, when the daemon chose them and
   * put their guards in already (technique.ts `guardPlan`).
   */
  isns?: number[];
  /** TTL (hop limit) of tcp-nutss's first SYN. */
  lowTtl?: number;
  /** The daemon's probe servers (`IP:PORT`), for techniques that classify their NAT. */
  probes?: string[];
  /** Birthday probing allowed for `udp` (daemon flag --udp-birthday). */
  birthday?: boolean;
  /**
   * tcp-direct under `auto` towards a public peer: `listen` (the public side only accepts),
   * `ephemeral` (the side behind NAT connects from a kernel-chosen port); default both connect
   * from SRC_PORT.
   */
  directMode?: "both" | "listen" | "ephemeral";
  /** The daemon's TURN server for `relay` (`--turn`; credentials never logged). */
  turn?: { server: string; user?: string; password?: string; secret?: string };
}

/** Daemon to worker. */
export type ToWorker =
  | { type: "start"; key: number; spec: AttemptSpec; logLevel: string }
  | { type: "peer"; key: number; data: string }
  | { type: "cancel"; key: number; reason: string }
  /** The answer to a `guard` (one handle per guard, in order) or `unguard` (no handles) request. */
  | { type: "guarded"; request: number; handles: number[]; error?: string }
  /**
   * The guards the daemon put in for an attempt from its technique's plan (`spec.isns`), with
   * their handles in the same order, or why they could not go in.
   */
  | { type: "planned"; key: number; guards: Guard[]; handles: number[]; error?: string };

/** Worker to daemon. */
export type FromWorker =
  | { type: "progress"; key: number; data: string }
  | { type: "connected"; key: number; fd: number; local: string; remote: string; via?: string }
  /** How many relayed connections the worker keeps (their allocations live in it). */
  | { type: "holding"; count: number }
  | { type: "failed"; key: number; reason: string }
  | { type: "log"; record: LogRecord }
  | { type: "fd"; fd: number; kind: FdKind | null; identity?: string }
  /** Guards an attempt asked for in one turn: installed together, all or none. */
  | { type: "guard"; key: number; request: number; guards: Guard[] }
  | { type: "unguard"; key: number; request: number; handle: number };
