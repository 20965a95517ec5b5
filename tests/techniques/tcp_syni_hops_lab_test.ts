/**
 * tcp-syni behind a double NAT on the responder's side: B's priming SYN
 * must cross both of B's NATs (and die before A's), or A's re-injected SYN
 * finds the carrier NAT closed.
 *
 * @module
 */

import { assertEquals, assertMatch } from "../assert.ts";
import { PunchdError } from "../../src/client/client.ts";
import { punch, punchdGuards, punchFailure, readExactly, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-syni hop discovery lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

Deno.test({
  name: "tcp-syni with --nutss-ttl 2 fails when the responder is behind a double NAT",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "preserving",
    "double",
    ["--nutss-ttl", "2", "--attempt-timeout", "3"],
    async (lab, clientA, clientB) => {
      const error = await punchFailure(clientA, clientB, lab, "tcp-syni", 0);
      assertEquals(error instanceof PunchdError, true);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
});

Deno.test({
  name:
    "tcp-syni with the discovered TTL connects through a double NAT on either side, 3 of 3 each",
  ignore: needsRoot,
}, async () => {
  for (const [natA, natB] of [["preserving", "double"], ["double", "preserving"]] as const) {
    await withLab(natA, natB, [], async (lab, clientA, clientB, services) => {
      for (let n = 0; n < 3; n++) {
        const { a, b } = await punch(clientA, clientB, lab, "tcp-syni", n);
        try {
          assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30000 + n });
          await a.write(new TextEncoder().encode("x"));
          assertEquals(await readExactly(b, 1), "x");
        } finally {
          a.close();
          b.close();
        }
      }
      // The responder finds its TTL; the initiator's SYN is re-injected at full TTL anyway.
      if (natB === "double") {
        assertMatch(services.b.logs(), /low TTL of the first SYN .*ttl=3 how=(discovered|cached)/);
      }
    });
  }
});
