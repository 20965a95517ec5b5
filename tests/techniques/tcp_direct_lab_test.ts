/**
 * tcp-direct through NATs that answer unsolicited SYNs with RST (profile
 * "rst"): the initiator primes its own NAT with a low-TTL SYN before the
 * responder connects, so neither NAT's RST closes the other's flow.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import type { NatProfile } from "../lab/lab.ts";
import { punch, punchdGuards, readExactly, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-direct lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

const bytes = (s: string) => new TextEncoder().encode(s);

const PAIRS: [NatProfile, NatProfile][] = [
  ["rst", "rst"],
  ["rst", "none"],
  ["none", "rst"],
  ["double", "rst"],
];

for (const [natA, natB] of PAIRS) {
  Deno.test({
    name: `tcp-direct between "${natA}" and "${natB}" connects 10 times out of 10, data both ways`,
    ignore: needsRoot,
  }, async () => {
    await withLab(natA, natB, [], async (lab, clientA, clientB) => {
      const times: number[] = [];
      for (let n = 0; n < 10; n++) {
        const started = performance.now();
        const { a, b } = await punch(clientA, clientB, lab, "tcp-direct", n);
        times.push(Math.round(performance.now() - started));
        try {
          await a.write(bytes(`ping ${n}`));
          assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
          await b.write(bytes(`pong ${n}`));
          assertEquals(await readExactly(a, `pong ${n}`.length), `pong ${n}`);
        } finally {
          a.close();
          b.close();
        }
      }
      // Before priming, two "rst" NATs refused each other's SYNs until the 10 s deadline.
      const total = times.reduce((x, y) => x + y, 0);
      assert(total < 30_000, `10 attempts took ${total} ms: ${times.join(", ")}`);
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    });
  });
}
