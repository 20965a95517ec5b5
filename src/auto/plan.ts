/**
 * The `auto` planner: from the two hellos, the ordered steps both sides run.
 *
 * Both punchds call {@linkcode planSteps} with the same two hellos (the
 * initiator's first), so they compute the same steps with the same numbers
 * and stay in step without further negotiation. The rules:
 *
 * | technique                  | planned when                                   | runs           |
 * | -------------------------- | ---------------------------------------------- | -------------- |
 * | tcp-direct / udp, LAN      | the sides share a subnet (same LAN, hairpin)   | at once, raced |
 * | tcp-direct, public         | a side has no NAT, or a side's mapping is unknown | first, in turn |
 * | tcp-nutss, tcp-syni, tcp-prime, udp-prime | neither side maps randomly    | in turn        |
 * | udp, udp-birthday          | not both sides map randomly (birthday when one does) | in turn  |
 * | relay                      | a side's daemon has a TURN server (`r=1`)      | last, in turn  |
 *
 * Steps in turn share the attempt's time by weight; a step that cannot
 * succeed ends early (each technique says when), and the next one starts.
 *
 * @module
 */

import { parseIp } from "../../ffi/ip.ts";
import type { TechniqueName } from "../control/codec.ts";
import type { Hello, LocalAddress } from "./wire.ts";

/** One step of a plan, in terms of both sides. */
export interface PlannedStep {
  /** Step number on the wire (`s<K>`). */
  index: number;
  technique: TechniqueName;
  /** Where the step connects: the peer's LAN address, or the endpoint the application gave. */
  target: "lan" | "public";
  /** For LAN steps: the initiator's and the responder's address on the shared subnet or site. */
  lan?: { initiator: string; responder: string; site?: true };
  /** Raced beside the steps in turn (from the start), rather than in turn. */
  parallel: boolean;
  /** Milliseconds the step may take. */
  budgetMs: number;
  /** Birthday probing allowed (`udp` with exactly one random side). */
  birthday: boolean;
  /**
   * tcp-direct to a public side: which side is public (it only listens; the other connects
   * from a port of the kernel's, off the punching steps' 4-tuple). Absent: both connect.
   */
  publicSide?: "initiate" | "respond";
  /** Why the step is in the plan (for the log). */
  why: string;
}

/** The plan and what it left out, with reasons. */
export interface Plan {
  steps: PlannedStep[];
  skipped: { technique: TechniqueName; why: string }[];
}

/** Relative time shares of steps in turn (3 for a technique not named here). */
const WEIGHT: Readonly<Record<string, number>> = {
  "tcp-direct": 1,
  "tcp-nutss": 3,
  "tcp-syni": 3,
  "tcp-prime": 3,
  udp: 4,
  "udp-birthday": 6,
  "udp-prime": 3,
  relay: 3,
};

/** Milliseconds kept back from the attempt's time for the handover. */
const RESERVE_MS = 300;

function sameSubnet(a: LocalAddress, b: LocalAddress): boolean {
  if (a.ip === b.ip || a.ip.includes(":") !== b.ip.includes(":")) return false;
  const x = parseIp(a.ip);
  const y = parseIp(b.ip);
  // Both must see the other on-link: the longer prefix decides.
  let bits = Math.max(a.prefixLength, b.prefixLength);
  if (bits === 0) return false;
  for (let i = 0; i < x.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((x[i] ?? 0) & mask) !== ((y[i] ?? 0) & mask)) return false;
  }
  return true;
}

/** The first pair of addresses (initiator's, responder's) on one subnet, or null. */
export function sharedSubnet(
  initiator: readonly LocalAddress[],
  responder: readonly LocalAddress[],
): { initiator: string; responder: string } | null {
  for (const a of initiator) {
    for (const b of responder) {
      if (sameSubnet(a, b)) return { initiator: a.ip, responder: b.ip };
    }
  }
  return null;
}

/**
 * Both sides behind one public address (one NAT, perhaps different LANs):
 * their first local addresses reach each other inside the site.
 */
function sameSite(
  initiator: Hello,
  responder: Hello,
): { initiator: string; responder: string; site: true } | null {
  const a = initiator.locals[0];
  const b = responder.locals[0];
  if (initiator.publicIp === undefined || initiator.publicIp !== responder.publicIp) return null;
  if (a === undefined || b === undefined || a.ip === b.ip) return null;
  if (a.ip.includes(":") !== b.ip.includes(":")) return null;
  return { initiator: a.ip, responder: b.ip, site: true };
}

const SIDE = { initiate: "initiator", respond: "responder" } as const;

/**
 * Plans the steps of one `auto` attempt. Pure and deterministic: the same
 * hellos and time give the same plan on both sides.
 */
export function planSteps(initiator: Hello, responder: Hello, totalMs: number): Plan {
  const allowed = initiator.techniques.filter((t) => responder.techniques.includes(t));
  const skipped: Plan["skipped"] = [];
  for (const t of initiator.techniques) {
    if (!allowed.includes(t)) {
      skipped.push({ technique: t, why: "the responder does not allow it" });
    }
  }
  const random = [initiator, responder].filter((h) => h.mapping === "rnd");
  const randomWhy = random.map((h) => `the ${SIDE[h.role]}'s NAT maps each flow to a random port`)
    .join(" and ");
  const noNat = [initiator, responder].find((h) => h.mapping === "none");
  const unknown = [initiator, responder].find((h) => h.mapping === "unk");
  const lan = sharedSubnet(initiator.locals, responder.locals) ?? sameSite(initiator, responder);
  const parallel: Omit<PlannedStep, "index" | "budgetMs">[] = [];
  const inTurn: Omit<PlannedStep, "index" | "budgetMs">[] = [];
  const base = { target: "public" as const, parallel: false, birthday: false };
  for (const technique of allowed) {
    switch (technique) {
      case "tcp-direct":
        if (lan !== null) {
          parallel.push({
            ...base,
            technique,
            target: "lan",
            lan,
            parallel: true,
            why: lanWhy(lan),
          });
        }
        // With a LAN step racing already, a second listener on the port would share its
        // connections at random (SO_REUSEPORT): the LAN step covers reachability.
        if (lan === null && (noNat !== undefined || unknown !== undefined)) {
          const bothPublic = initiator.mapping === "none" && responder.mapping === "none";
          const why = noNat !== undefined
            ? `the ${SIDE[noNat.role]} is not behind NAT`
            : `the ${SIDE[(unknown ?? initiator).role]}'s NAT is unknown`;
          if (noNat !== undefined && !bothPublic) {
            // Off the punching 4-tuple (the public side listens, the other connects from a
            // kernel port), so it races beside the punching steps: a public side that is
            // really reachable answers at once, one behind a firewall costs nothing.
            parallel.push({ ...base, technique, parallel: true, publicSide: noNat.role, why });
          } else {
            inTurn.push({ ...base, technique, why });
          }
        } else if (lan === null) {
          skipped.push({ technique, why: "no shared subnet and both sides behind NAT" });
        }
        break;
      case "udp":
      case "udp-birthday":
        if (technique === "udp" && lan !== null) {
          parallel.push({
            ...base,
            technique,
            target: "lan",
            lan,
            parallel: true,
            why: lanWhy(lan),
          });
        }
        if (random.length === 2) {
          skipped.push({ technique, why: `${randomWhy}: no side to predict` });
        } else {
          inTurn.push({
            ...base,
            technique,
            birthday: random.length === 1,
            why: random.length === 1
              ? `${randomWhy}: birthday probing`
              : "both sides' ports are predictable",
          });
        }
        break;
      case "relay":
        if (initiator.relay === true || responder.relay === true) {
          const side = initiator.relay === true ? "initiator" : "responder";
          inTurn.push({ ...base, technique, why: `through the ${side}'s TURN server` });
        } else skipped.push({ technique, why: "neither side has a TURN server" });
        break;
      default:
        if (random.length > 0) skipped.push({ technique, why: randomWhy });
        else inTurn.push({ ...base, technique, why: "both sides' ports are predictable" });
    }
  }
  // The low-TTL packet is safest from a side without NAT (its hop count is one firewall at
  // most): tcp-nutss lets the initiator send it, tcp-prime the responder. With only the
  // responder public, tcp-prime goes first (behind a double NAT of unknown depth the
  // initiator's TTL can be too small, and it then waits for the kernel's retransmission).
  if (responder.mapping === "none" && initiator.mapping !== "none") {
    const prime = inTurn.findIndex((s) => s.technique === "tcp-prime");
    const nutss = inTurn.findIndex((s) => s.technique === "tcp-nutss");
    if (prime > nutss && nutss >= 0) {
      const [step] = inTurn.splice(prime, 1);
      if (step !== undefined) {
        inTurn.splice(nutss, 0, {
          ...step,
          why: `${step.why}; the responder, not behind NAT, primes`,
        });
      }
    }
  }
  // The relay of last resort comes after every punching step, whatever the application's order.
  const relay = inTurn.findIndex((s) => s.technique === "relay");
  if (relay >= 0) inTurn.push(...inTurn.splice(relay, 1));
  const usable = Math.max(0, totalMs - RESERVE_MS);
  const weight = (t: TechniqueName) => WEIGHT[t] ?? 3;
  const weights = inTurn.reduce((sum, s) => sum + weight(s.technique), 0);
  const steps: PlannedStep[] = [];
  for (const s of parallel) steps.push({ ...s, index: steps.length, budgetMs: usable });
  for (const s of inTurn) {
    const share = Math.floor(usable * weight(s.technique) / weights);
    steps.push({ ...s, index: steps.length, budgetMs: share });
  }
  return { steps, skipped };
}

function lanWhy(lan: { initiator: string; responder: string; site?: true }): string {
  return lan.site === true
    ? `behind one public address (${lan.initiator} and ${lan.responder})`
    : `same subnet (${lan.initiator} and ${lan.responder})`;
}

/** One line for the log: the order and why. */
export function describePlan(plan: Plan): string {
  const steps = plan.steps.map((s) =>
    `${s.index}:${s.technique}${s.target === "lan" ? "@lan" : ""}${s.parallel ? "(raced)" : ""} ${
      Math.round(s.budgetMs)
    }ms [${s.why}]`
  );
  const skipped = plan.skipped.map((s) => `${s.technique} [${s.why}]`);
  return `${steps.join(", ") || "nothing"}${
    skipped.length > 0 ? `; skipped ${skipped.join(", ")}` : ""
  }`;
}
