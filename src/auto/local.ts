/**
 * What this side tells the peer about itself in an `auto` hello: its
 * interface addresses (direct candidates) and what endpoint discovery found
 * about its NAT.
 *
 * @module
 */

import { IFF_LOOPBACK, IFF_UP, type InterfaceAddress } from "../../ffi/ifaddrs.ts";
import type { Protocol, TechniqueName } from "../control/codec.ts";
import { type Hello, type LocalAddress, type Mapping, MAX_LOCALS } from "./wire.ts";

/** The latest `endpoint` answer for one local port. */
export interface KnownEndpoint {
  /** The public address the probe servers saw (or the local one, without probes). */
  ip: string;
  ports: number[];
  /** `preserved`, `consistent`, `delta+N`, `random`, `local` ... */
  how: string;
  /** RFC 5780 `MAPPING,FILTERING` (e.g. `eim,apdf`), when a STUN server could tell. */
  nat?: string;
}

/** The mapping an `endpoint` HOW stands for. */
export function mappingOf(
  known: KnownEndpoint | undefined,
  locals: readonly LocalAddress[],
): Mapping {
  if (known === undefined || known.how === "local") return "unk";
  if (locals.some((l) => l.ip === known.ip)) return "none";
  if (known.how === "preserved") return "pre";
  if (known.how === "consistent") return "eim";
  if (known.how.startsWith("delta")) return "seq";
  // RFC 5780's mapping test tells what one server's observations cannot (one STUN server with
  // an alternate address): the same public endpoint toward every destination is predictable.
  if (known.nat?.startsWith("eim,")) return "eim";
  if (known.how === "random") return "rnd";
  return "unk";
}

function isLinkLocal(ip: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(ip) || ip.startsWith("169.254.");
}

/**
 * The direct candidates: the bound address when the request names one,
 * otherwise every up, non-loopback, non-link-local address of the family.
 */
export function localCandidates(
  srcIp: string,
  interfaces: readonly InterfaceAddress[],
): LocalAddress[] {
  const family = srcIp.includes(":") ? "inet6" : "inet";
  const usable = interfaces.filter((i) =>
    i.family === family && (i.flags & IFF_UP) !== 0 && (i.flags & IFF_LOOPBACK) === 0 &&
    !isLinkLocal(i.address)
  );
  const unspecified = srcIp === "0.0.0.0" || srcIp === "::";
  const chosen = unspecified ? usable : usable.filter((i) => i.address === srcIp);
  const seen = new Set<string>();
  const out: LocalAddress[] = [];
  for (const i of chosen) {
    if (seen.has(i.address) || out.length >= MAX_LOCALS) continue;
    seen.add(i.address);
    out.push({ ip: i.address, prefixLength: i.prefixLength });
  }
  return out;
}

/** This side's hello. */
export function buildHello(options: {
  role: Hello["role"];
  protocol: Protocol;
  techniques: TechniqueName[];
  srcIp: string;
  port: number;
  interfaces: readonly InterfaceAddress[];
  known?: KnownEndpoint;
  hops?: number;
  /** The daemon has a TURN server (`--turn`). */
  relay?: boolean;
}): Hello {
  const locals = localCandidates(options.srcIp, options.interfaces);
  const hello: Hello = {
    role: options.role,
    protocol: options.protocol,
    techniques: options.techniques,
    port: options.port,
    locals,
    mapping: mappingOf(options.known, locals),
  };
  if (options.known !== undefined && options.known.how !== "local") {
    hello.publicIp = options.known.ip;
  }
  if (options.hops !== undefined) hello.hops = options.hops;
  if (options.relay === true) hello.relay = true;
  return hello;
}
