/**
 * NAT behaviour discovery (RFC 5780 §4.3, §4.4) over UDP against a STUN
 * server that has a second address (OTHER-ADDRESS): how the NAT maps a
 * local endpoint to public ones, and which inbound packets it lets through.
 *
 * From one fresh local port (never the application's: on a NAT that
 * allocates ports in sequence, every flow here takes a port, and the
 * prediction from the application's port must come after these flows):
 *
 * ```
 *  mapping    test I    primary IP:port          -> X1   (no OTHER-ADDRESS: no classification)
 *             test II   other IP, primary port   -> X2   X2 = X1: endpoint-independent (eim)
 *             test III  other IP, other port     -> X3   X3 = X2: address-dependent (adm)
 *                                                        else address and port-dependent (apdm)
 *  filtering  test II   CHANGE-REQUEST ip+port to primary: answered -> endpoint-independent (eif)
 *             test III  CHANGE-REQUEST port to primary:    answered -> address-dependent (adf)
 *                                                          else address and port-dependent (apdf)
 * ```
 *
 * A lost answer looks like filtering: each filtering test retries (2
 * requests, 300 and 600 ms) before it counts as filtered, as RFC 5780 §4.4
 * says to. The whole classification takes at most about 4 s and 8
 * requests.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { bindingUdp } from "./stun_client.ts";

/** RFC 5780 mapping behaviour. */
export type MappingBehavior = "eim" | "adm" | "apdm";
/** RFC 5780 filtering behaviour. */
export type FilteringBehavior = "eif" | "adf" | "apdf";

/** What the classification found. */
export interface NatBehavior {
  mapping: MappingBehavior;
  filtering: FilteringBehavior;
  /** The public endpoint of test I. */
  mapped: InetAddress;
  /** True when the mapped endpoint is the local one: no NAT, at most a firewall. */
  noNat: boolean;
}

/** Options (tests shorten the waits). */
export interface ClassifyOptions {
  /** First wait of the mapping tests' Binding requests (default 500 ms, 3 tries). */
  rtoMs?: number;
  /** First wait of the filtering tests (default 300 ms, 2 tries). */
  filterRtoMs?: number;
}

function same(a: InetAddress, b: InetAddress): boolean {
  return a.address === b.address && a.port === b.port;
}

/**
 * Classifies the NAT between `localIp` and `server` (RFC 5780). Resolves
 * null when the server offers no OTHER-ADDRESS (it cannot tell) or its
 * other address does not answer; throws when the server does not answer at
 * all or refuses.
 */
export async function classifyNat(
  localIp: string,
  server: InetAddress,
  signal: AbortSignal,
  options: ClassifyOptions = {},
): Promise<NatBehavior | null> {
  const rtoMs = options.rtoMs ?? 500;
  const filterRtoMs = options.filterRtoMs ?? 300;
  using socket = Socket.create(server.family, "datagram");
  socket.bind(inetAddress(localIp, 0));
  const first = await bindingUdp(socket, server, signal, { rtoMs });
  if (first === null) {
    throw new Error(`Cannot classify the NAT: no answer from ${formatAddress(server)}`);
  }
  const other = first.otherAddress;
  if (other === undefined || other.family !== server.family) return null;
  if (other.address === server.address || other.port === server.port) return null;
  const local = socket.localAddress();
  const noNat = local.family !== "unix" && local.address === first.mapped.address &&
    local.port === first.mapped.port;

  let mapping: MappingBehavior;
  const second = await bindingUdp(socket, inetAddress(other.address, server.port), signal, {
    rtoMs,
  });
  if (second === null) return null;
  if (same(second.mapped, first.mapped)) mapping = "eim";
  else {
    const third = await bindingUdp(socket, other, signal, { rtoMs });
    if (third === null) return null;
    mapping = same(third.mapped, second.mapped) ? "adm" : "apdm";
  }

  // Filtering, toward the primary address only (the mapping there is the one under test).
  const filterOptions = { rtoMs: filterRtoMs, tries: 2 };
  let filtering: FilteringBehavior;
  const anyAddress = await bindingUdp(socket, server, signal, {
    ...filterOptions,
    change: { ip: true, port: true },
  });
  if (anyAddress !== null) filtering = "eif";
  else {
    const otherPort = await bindingUdp(socket, server, signal, {
      ...filterOptions,
      change: { ip: false, port: true },
    });
    filtering = otherPort !== null ? "adf" : "apdf";
  }
  return { mapping, filtering, mapped: first.mapped, noNat };
}

/**
 * Classifications per server, so that a burst of `endpoint` requests runs
 * the tests once (bounded: a NAT's behaviour rarely changes, its address
 * may). Failures are not kept.
 */
export class NatBehaviorCache {
  readonly #entries = new Map<string, { at: number; value: Promise<NatBehavior | null> }>();
  readonly #maxAgeMs: number;
  readonly #now: () => number;

  /** Builds an empty cache; entries live `maxAgeMs` (default 10 min). */
  constructor(options: { maxAgeMs?: number; now?: () => number } = {}) {
    this.#maxAgeMs = options.maxAgeMs ?? 600_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** The classification toward `server` from `localIp`, run by `classify` when not known. */
  get(
    localIp: string,
    server: InetAddress,
    classify: () => Promise<NatBehavior | null>,
  ): Promise<NatBehavior | null> {
    const key = `${localIp}>${formatAddress(server)}`;
    const now = this.#now();
    for (const [k, v] of this.#entries) if (now - v.at >= this.#maxAgeMs) this.#entries.delete(k);
    const known = this.#entries.get(key);
    if (known !== undefined) return known.value;
    const value = classify();
    this.#entries.set(key, { at: now, value });
    value.catch(() => this.#entries.delete(key));
    // At most a few servers and local addresses are ever configured; still, stay bounded.
    while (this.#entries.size > 64) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    return value;
  }
}
