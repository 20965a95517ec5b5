/**
 * The low TTL (hop limit) of an attempt's first packet, shared by every
 * technique that sends one: the daemon's fixed `--nutss-ttl` when given,
 * else what hop discovery finds toward DST_IP (src/discovery/hop_limit.ts).
 *
 * @module
 */

import type { HopFinder } from "../discovery/hop_limit.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext } from "./technique.ts";

/** Checks a fixed low TTL (undefined: hop discovery); RangeError naming the technique. */
export function assertLowTtl(spec: AttemptSpec, technique: string): void {
  const ttl = spec.lowTtl;
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1 || ttl > 255)) {
    throw new RangeError(`${technique} low TTL must be 1-255`);
  }
}

/**
 * The low TTL toward DST_IP: `fixed` when given (by default the attempt's
 * own), else found by `hops` (cached per route, 2 when unknown). Logged as
 * `message` with the value, how it was found and why.
 */
export async function findLowTtl(
  hops: HopFinder,
  spec: AttemptSpec,
  context: AttemptContext,
  message: string,
  fixed: number | undefined = spec.lowTtl,
): Promise<number> {
  const choice = await hops.hopLimit(
    fixed,
    { source: spec.srcIp, destination: spec.dstIp },
    context.signal,
  );
  context.log.info(message, { ttl: choice.hopLimit, how: choice.how, reason: choice.reason });
  return choice.hopLimit;
}
