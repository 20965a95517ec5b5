/**
 * `auto` end to end in the lab: one request per side finds the way by itself,
 * and the reply says which technique won.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { PunchdClient } from "../../src/client/client.ts";
import type { TechniqueChoice } from "../../src/control/codec.ts";
import { type Lab } from "../lab/lab.ts";
import { punch, punchdGuards, punchFailure, readExactly, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const needsRoot = skipUnless(
  isRoot(),
  "auto lab tests",
  "network namespaces and nftables need root",
);

/** One auto attempt that must connect; returns the winner the initiator's ok named. */
async function connects(
  a: PunchdClient,
  b: PunchdClient,
  lab: Lab,
  choice: TechniqueChoice,
  n: number,
): Promise<string> {
  const winners: string[] = [];
  const origInitiate = a.initiate.bind(a);
  const origRespond = b.respond.bind(b);
  // Read each side's winner from its attempt.
  a.initiate = (params) => {
    const attempt = origInitiate(params);
    attempt.winner.then((w) => winners.push(`a:${w?.technique}`));
    return attempt;
  };
  b.respond = (params) => {
    const attempt = origRespond(params);
    attempt.winner.then((w) => winners.push(`b:${w?.technique}`));
    return attempt;
  };
  try {
    const { a: sa, b: sb } = await punch(a, b, lab, choice, n);
    try {
      await sa.write(bytes(`ping ${n}`));
      assertEquals(await readExactly(sb, `ping ${n}`.length), `ping ${n}`);
      await sb.write(bytes(`pong ${n}`));
      assertEquals(await readExactly(sa, `pong ${n}`.length), `pong ${n}`);
    } finally {
      sa.close();
      sb.close();
    }
  } finally {
    a.initiate = origInitiate;
    b.respond = origRespond;
  }
  await new Promise((r) => setTimeout(r, 0));
  const wa = winners.find((w) => w.startsWith("a:"))?.slice(2) ?? "";
  const wb = winners.find((w) => w.startsWith("b:"))?.slice(2) ?? "";
  assertEquals(wa, wb, "both sides name the same technique");
  return wa;
}

Deno.test({
  name: "auto connects two port-preserving NATs with tcp-nutss and leaves no guard",
  ignore: needsRoot,
  fn: () =>
    withLab("preserving", "preserving", [], async (lab, a, b) => {
      for (let n = 0; n < 3; n++) assertEquals(await connects(a, b, lab, "auto", n), "tcp-nutss");
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    }),
});

Deno.test({
  name: "auto connects directly to a host that is not behind NAT",
  ignore: needsRoot,
  fn: () =>
    withLab("preserving", "none", [], async (lab, a, b) => {
      // The connection from a kernel port to the public side races tcp-prime (the public side
      // primes); either wins within a round trip or two.
      for (let n = 0; n < 3; n++) {
        const winner = await connects(a, b, lab, "auto", n);
        assert(["tcp-direct", "tcp-prime"].includes(winner), `won: ${winner}`);
      }
    }),
});

Deno.test({
  name: "an explicit list runs in the application's order",
  ignore: needsRoot,
  fn: () =>
    withLab("preserving", "preserving", [], async (lab, a, b) => {
      for (let n = 0; n < 2; n++) {
        assertEquals(await connects(a, b, lab, "tcp-syni,tcp-nutss", n), "tcp-syni");
      }
    }),
});

Deno.test({
  name: "auto-udp connects two port-preserving NATs with udp",
  ignore: needsRoot,
  fn: () =>
    withLab("preserving", "preserving", [], async (lab, a, b) => {
      for (let n = 0; n < 2; n++) assertEquals(await connects(a, b, lab, "auto-udp", n), "udp");
    }),
});

Deno.test({
  name: "auto skips TCP punching when a side maps randomly and says why in one error line",
  ignore: needsRoot,
  fn: () =>
    withLab("symmetric", "preserving", [], async (lab, a, b) => {
      const started = performance.now();
      const error = await punchFailure(a, b, lab, "auto", 0);
      const ms = performance.now() - started;
      assertMatch(error.message, /auto: /);
      assertMatch(
        error.message,
        /skipped .*tcp-nutss, tcp-syni, tcp-prime \(the initiator's NAT maps each flow to a random port/,
      );
      assert(ms < 3000, `a plan with nothing to try fails at once (took ${Math.round(ms)} ms)`);
    }),
});

/** Three attempts between the two hosts behind the hairpin NAT; each socket's peer is the other host's LAN address. */
async function insideTheSite(a: PunchdClient, b: PunchdClient, lab: Lab, choice: TechniqueChoice) {
  for (let n = 0; n < 3; n++) {
    const { a: sa, b: sb } = await punch(a, b, lab, choice, n);
    try {
      assertEquals(sa.peerAddress(), { family: "inet", address: lab.hostB.ip, port: 30000 + n });
      assertEquals(sb.peerAddress(), { family: "inet", address: lab.hostA.ip, port: 20000 + n });
      if (choice === "auto") {
        await sa.write(bytes("x"));
        assertEquals(await readExactly(sb, 1), "x");
      }
    } finally {
      sa.close();
      sb.close();
    }
  }
}

Deno.test({
  name: "auto connects two hosts behind one NAT inside the site, without punching",
  ignore: needsRoot,
  fn: () =>
    withLab("hairpin", "hairpin", [], async (lab, a, b) => {
      await insideTheSite(a, b, lab, "auto");
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
    }),
});

Deno.test({
  name: "auto-udp connects two hosts behind one NAT inside the site",
  ignore: needsRoot,
  fn: () => withLab("hairpin", "hairpin", [], (lab, a, b) => insideTheSite(a, b, lab, "auto-udp")),
});
