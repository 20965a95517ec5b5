/**
 * tcp-direct from behind a NAT with random mapping (profile "symmetric") to
 * a public peer (profile "none"): the initiator's connect reaches the peer
 * from a port nobody published. The responder accepts it because it comes
 * from DST_IP (any port) and the confirmation proves it is the peer; before
 * that, the responder dropped it (not one of DST_PORTS) while the
 * initiator reported ok on it.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import { punch, punchdGuards, readExactly, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-direct random-mapping lab test";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test({
  name:
    'tcp-direct from a "symmetric" NAT to a public peer connects 5 times out of 5 although the published port is not the real one, data both ways',
  ignore: needsRoot,
}, async () => {
  await withLab("symmetric", "none", [], async (lab, clientA, clientB) => {
    let unpublished = 0;
    for (let n = 0; n < 5; n++) {
      const { a, b, endpointA } = await punch(clientA, clientB, lab, "tcp-direct", n);
      try {
        assertEquals(a.peerAddress(), { family: "inet", address: lab.hostB.ip, port: 30000 + n });
        const seen = b.peerAddress();
        assert(seen.family === "inet" && seen.address === lab.publicA, JSON.stringify(seen));
        if (!endpointA.ports.includes(seen.port)) unpublished++;
        await a.write(bytes(`ping ${n}`));
        assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
        await b.write(bytes(`pong ${n}`));
        assertEquals(await readExactly(a, `pong ${n}`.length), `pong ${n}`);
      } finally {
        a.close();
        b.close();
      }
    }
    // Random mapping: the port B saw is (almost always) not the one A published.
    assert(unpublished >= 4, `only ${unpublished} of 5 came from an unpublished port`);
    assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
    assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
  });
});
