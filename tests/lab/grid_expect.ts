/**
 * What the traversal grid expects of each cell (a pair of lab NAT profiles
 * and a technique), reasoned from the two profiles' behaviour alone: a pure
 * function, so the reasoning is unit tested and printed beside every
 * measured cell.
 *
 * @module
 */

import type { NatProfile } from "./lab.ts";

/** A technique or `auto` as the grid runs it (the TECHNIQUE field of `initiate`). */
export type GridTechnique =
  | "tcp-direct"
  | "tcp-nutss"
  | "tcp-syni"
  | "tcp-prime"
  | "udp"
  | "udp-birthday"
  | "udp-prime"
  | "auto"
  | "auto-udp";

/** Every technique of the grid, single ones first, in the order of the grid's columns. */
export const GRID_TECHNIQUES: readonly GridTechnique[] = [
  "tcp-direct",
  "tcp-nutss",
  "tcp-syni",
  "tcp-prime",
  "udp",
  "udp-birthday",
  "udp-prime",
  "auto",
  "auto-udp",
];

/** One pair of the grid: host A (initiator) behind `a`, host B (responder) behind `b`. */
export interface GridPair {
  a: NatProfile;
  b: NatProfile;
  family: "inet" | "inet6";
}

/** The expected outcome of a cell: `maybe` where the behaviours alone do not decide it. */
export type Expected = "ok" | "fail" | "maybe";

/** An expected outcome and why. */
export interface Expectation {
  expected: Expected;
  reason: string;
}

/** How a lab profile maps ports and treats unsolicited inbound packets. */
interface Behaviour {
  /** public: no translation; preserving/shifting: endpoint-independent; sequential/random: per flow. */
  mapping: "public" | "preserving" | "shifting" | "sequential" | "random";
  /** False only for "none": no state, everything inbound passes. */
  stateful: boolean;
  /** An inbound pure SYN on a flow that left as a SYN passes (simultaneous open). */
  simultaneousOpen: boolean;
  /** The router's own stack answers packets to unmapped ports of its public address. */
  answering: boolean;
  /** Unsolicited inbound SYNs are answered with RST. */
  rst: boolean;
  /** NATs between the host and the internet (2 for "double"). */
  natHops: number;
}

const BASE: Behaviour = {
  mapping: "preserving",
  stateful: true,
  simultaneousOpen: true,
  answering: false,
  rst: false,
  natHops: 1,
};

/** The behaviour of each profile, as lab.ts builds it. */
export function behaviour(profile: NatProfile): Behaviour {
  switch (profile) {
    case "none":
      return { ...BASE, mapping: "public", stateful: false, natHops: 0 };
    case "firewall":
      return { ...BASE, mapping: "public", natHops: 0 };
    case "preserving":
    case "hairpin":
      return BASE;
    case "shifting":
      return { ...BASE, mapping: "shifting" };
    case "sequential":
      return { ...BASE, mapping: "sequential" };
    case "symmetric":
      return { ...BASE, mapping: "random" };
    case "rst":
      return { ...BASE, rst: true };
    case "nosimopen":
      return { ...BASE, simultaneousOpen: false };
    case "answering":
      return { ...BASE, answering: true };
    case "double":
      return { ...BASE, natHops: 2 };
  }
}

/** The single technique expectations that `auto` (`tcp`) or `auto-udp` builds on. */
const AUTO_OF: Record<"auto" | "auto-udp", GridTechnique[]> = {
  auto: ["tcp-direct", "tcp-nutss", "tcp-syni", "tcp-prime"],
  "auto-udp": ["udp", "udp-birthday", "udp-prime"],
};

const ok = (reason: string): Expectation => ({ expected: "ok", reason });
const fail = (reason: string): Expectation => ({ expected: "fail", reason });
const maybe = (reason: string): Expectation => ({ expected: "maybe", reason });

/**
 * The expected outcome of `technique` between host A behind `pair.a`
 * (initiator) and host B behind `pair.b` (responder), with the reason.
 */
export function expect(pair: GridPair, technique: GridTechnique): Expectation {
  if (technique === "auto" || technique === "auto-udp") {
    const parts = AUTO_OF[technique].map((t) => ({ t, e: expect(pair, t) }));
    const good = parts.filter((p) => p.e.expected === "ok").map((p) => p.t);
    if (good.length > 0) return ok(`${good.join(", ")} expected to connect`);
    const unsure = parts.filter((p) => p.e.expected === "maybe").map((p) => p.t);
    if (unsure.length > 0) return maybe(`only ${unsure.join(", ")} might connect`);
    return fail("no single technique can connect");
  }
  if (pair.a === "hairpin") return hairpin(technique);
  const a = behaviour(pair.a);
  const b = behaviour(pair.b);
  const random = a.mapping === "random" ? "A" : b.mapping === "random" ? "B" : null;
  const sequential = a.mapping === "sequential" ? "A" : b.mapping === "sequential" ? "B" : null;
  const perFlow = (x: Behaviour) => x.mapping === "random" || x.mapping === "sequential";
  if (technique === "udp-birthday") {
    if (perFlow(a) && perFlow(b)) {
      return fail(
        "both NATs map each destination to a new port: birthday probing needs one side that does not",
      );
    }
    if (random !== null) return ok(`birthday probing finds ${random}'s random mapping`);
    if (sequential !== null) {
      return maybe(`birthday probing or the prediction finds ${sequential}'s sequential mapping`);
    }
  } else if (technique === "tcp-direct" && (!a.stateful || !b.stateful) && random !== null) {
    // tcp-direct confirms the peer with the attempt token and accepts it from any port of its address.
    return ok(
      `the public side accepts ${random}'s connection from any port, confirmed by the token`,
    );
  } else if (random !== null) {
    // punchd accepts the peer only from the endpoint it published, even where nothing filters.
    return fail(`${random}'s NAT maps each flow to a random port: not the endpoint it published`);
  }
  if (sequential !== null) {
    return maybe(
      `${sequential}'s NAT gives each flow the next port: the published prediction holds only if no other flow takes it first`,
    );
  }
  // A host with no stateful device in front is reachable: a plain connect or datagram to it works.
  if (technique === "tcp-direct" || technique === "udp") {
    if (!b.stateful) {
      return ok("B is public and unfiltered: A reaches it at the endpoint it published");
    }
    if (!a.stateful) {
      return ok("A is public and unfiltered: B reaches it at the endpoint it published");
    }
  }
  if (technique === "tcp-direct") {
    if (!a.simultaneousOpen && !b.simultaneousOpen) {
      return fail(
        "neither NAT passes an inbound SYN on an outgoing SYN's flow (no simultaneous open)",
      );
    }
    if (a.answering || b.answering || a.rst || b.rst) {
      return maybe(
        "an early SYN at a NAT that answers it (RST) spoils that side's connect or mapping",
      );
    }
    return ok("repeated connects from both sides: one SYN meets the other side's open mapping");
  }
  if (technique === "tcp-nutss") {
    if (!a.simultaneousOpen && !b.simultaneousOpen) {
      return fail("neither NAT passes an inbound pure SYN on a flow that left as a SYN");
    }
    return ok(
      a.natHops > 1
        ? "A's low-TTL SYN crosses both of A's NATs with the discovered hop count"
        : "A's low-TTL SYN opens A's mapping and dies before B's NAT; B's SYN passes it",
    );
  }
  // The lab's public hosts have addresses in 10.0.0.0/8, the same block as B's LAN: hop
  // discovery then cannot tell inside from outside and uses 2, which dies in B's carrier NAT.
  const blindPriming = b.natHops > 1 && a.natHops === 0
    ? "A's address is in B's own private block (the lab's public hosts use 10.0.x): hop discovery uses 2, and B's priming packet dies in B's carrier-grade NAT"
    : null;
  if (technique === "tcp-syni") {
    if (!b.simultaneousOpen) {
      return fail("B's NAT drops A's inbound SYN on the flow B's priming SYN opened");
    }
    if (blindPriming !== null) return fail(blindPriming);
    return ok(
      b.natHops > 1
        ? "B's priming SYN crosses both of B's NATs with the discovered hop count; A's SYN passes them"
        : "B's low-TTL SYN opens B's mapping; A's SYN passes it",
    );
  }
  if (technique === "tcp-prime" || technique === "udp-prime") {
    if (technique === "tcp-prime" && !b.simultaneousOpen) {
      return a.simultaneousOpen
        ? ok(
          "B's NAT drops A's SYN, but B's SYN, retransmitted at full TTL after ~1 s, passes A's NAT on A's flow (simultaneous open at A)",
        )
        : fail("neither NAT passes an inbound pure SYN on a flow that left as a SYN");
    }
    if (blindPriming !== null) {
      return technique === "udp-prime"
        ? fail(blindPriming)
        : ok(`${blindPriming}; B's SYN, retransmitted at full TTL after ~1 s, still gets through`);
    }
    return ok("B primes its own NAT/firewall for A's endpoint; A's ordinary packet passes it");
  }
  if (technique === "udp" || technique === "udp-birthday") {
    if (a.answering || b.answering) {
      return ok("low-TTL first punches keep an answering NAT from taking the peer's port");
    }
    return ok("both mappings are predictable: punches from both sides meet");
  }
  return maybe("no reasoning for this technique");
}

/** Both hosts behind one hairpinning, port-preserving NAT. */
function hairpin(technique: GridTechnique): Expectation {
  switch (technique) {
    case "tcp-direct":
    case "udp":
    case "udp-birthday":
      return ok("the NAT hairpins: a flow to the peer's public endpoint reaches the peer");
    case "udp-prime":
      return ok("the NAT hairpins and admits LAN-to-LAN flows without priming");
    default:
      return maybe("low-TTL SYNs do not die on the way: the hairpin path has one hop");
  }
}
