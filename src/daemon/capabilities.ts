/**
 * What the daemon may do here: its effective capabilities, and from them
 * and the firewall table, which techniques can run (and why the others
 * cannot). Root has every capability; a service account with
 * CAP_NET_ADMIN and CAP_NET_RAW (the systemd unit) runs every technique.
 *
 * @module
 */

import type { TechniqueName } from "../control/codec.ts";
import { TECHNIQUES } from "../control/codec.ts";
import type { TechniqueEntry } from "../techniques/registry.ts";
import { effectiveCapabilitySet } from "../../ffi/syscalls.ts";

/** capabilities(7) numbers. */
export const CAP_NET_ADMIN = 12;
/** capabilities(7) numbers. */
export const CAP_NET_RAW = 13;

/**
 * What the techniques that need the firewall need: CAP_NET_ADMIN for nftables and TCP_REPAIR,
 * CAP_NET_RAW for the raw sockets that reset a NAT's flow state and inject segments.
 */
const FIREWALL_CAPS = [["CAP_NET_ADMIN", CAP_NET_ADMIN], ["CAP_NET_RAW", CAP_NET_RAW]] as const;

/**
 * The effective capability set: from `status` (a /proc/PID/status text) when given, else from
 * capget(2). All bits (-1) when it cannot be told.
 */
export function effectiveCapabilities(status?: string): bigint {
  if (status === undefined) {
    try {
      return effectiveCapabilitySet();
    } catch {
      return -1n;
    }
  }
  const hex = status.match(/^CapEff:\s*([0-9a-f]+)$/m)?.[1];
  return hex === undefined ? -1n : BigInt(`0x${hex}`);
}

/** True when `capabilities` holds capability `cap`. */
export function hasCapability(capabilities: bigint, cap: number): boolean {
  return capabilities < 0n || ((capabilities >> BigInt(cap)) & 1n) === 1n;
}

/**
 * Techniques that cannot run here, with the reason: those that need the
 * firewall lack a capability, or the table could not be made.
 */
export function techniqueAvailability(
  registry: Readonly<Record<TechniqueName, TechniqueEntry>>,
  { firewallError, capabilities = effectiveCapabilities() }: {
    firewallError: string | null;
    capabilities?: bigint;
  },
): Map<TechniqueName, string> {
  const missing = FIREWALL_CAPS.filter(([, cap]) => !hasCapability(capabilities, cap)).map((
    [name],
  ) => name);
  const out = new Map<TechniqueName, string>();
  for (const technique of TECHNIQUES) {
    if (!registry[technique].technique.needsFirewall) continue;
    if (missing.length > 0) out.set(technique, `needs ${missing.join(" and ")}`);
    else if (firewallError !== null) {
      out.set(technique, `punchd's nftables table: ${firewallError}`);
    }
  }
  return out;
}
