/**
 * tcp-nutss behind a double NAT (a home NAT behind a carrier-grade NAT):
 * the fixed TTL 2 dies inside at the carrier NAT, hop discovery finds 3.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdError } from "../../src/client/client.ts";
import { punch, punchdGuards, punchFailure, readExactly, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-nutss hop discovery lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

const bytes = (s: string) => new TextEncoder().encode(s);

/** Milliseconds from an attempt's "low TTL" line to its "connected" line in a daemon's log. */
function handshakeMs(logs: string, id: string): number {
  const at = (pattern: RegExp) => {
    const line = logs.split("\n").find((l) => l.includes(`attempt=${id} `) && pattern.test(l));
    assert(line !== undefined, `no line ${pattern} of attempt ${id} in:\n${logs}`);
    return Date.parse(line.split(" ")[0] ?? "");
  };
  return at(/ connected /) - at(/ low TTL of the first SYN /);
}

Deno.test({
  name:
    "tcp-nutss with --nutss-ttl 2 behind a double NAT: the first SYN dies at the carrier NAT, so nothing connects before the kernel's retransmission (a 1 s attempt fails)",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "double",
    "preserving",
    ["--nutss-ttl", "2", "--attempt-timeout", "1"],
    async (lab, clientA, clientB, services) => {
      for (let n = 0; n < 2; n++) {
        const error = await punchFailure(clientA, clientB, lab, "tcp-nutss", n);
        assert(error instanceof PunchdError, `expected a PunchdError, got ${error}`);
        assertMatch(error.reason, /timed out after 1000 ms/);
      }
      assertMatch(services.a.logs(), /low TTL of the first SYN .*ttl=2 how=fixed/);
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
});

Deno.test({
  name:
    "tcp-nutss with the discovered TTL behind a double NAT connects on the peer's first SYN, 5 times out of 5",
  ignore: needsRoot,
}, async () => {
  await withLab("double", "preserving", [], async (lab, clientA, clientB, services) => {
    // The first attempt starts both workers and probes the route; the others use the cache.
    for (let n = 0; n < 6; n++) {
      const { a, b } = await punch(clientA, clientB, lab, "tcp-nutss", n);
      try {
        assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30000 + n });
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 20000 + n });
        await a.write(bytes(`ping ${n}`));
        assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
      } finally {
        a.close();
        b.close();
      }
      if (n === 0) continue;
      // A first SYN that died inside would leave the retransmission (1 s later) to connect.
      const ms = handshakeMs(services.a.logs(), `a${n}`);
      assert(ms < 1000, `attempt a${n} took ${ms} ms: connected by a retransmission`);
    }
    const logs = services.a.logs();
    assertMatch(
      logs,
      /low TTL of the first SYN .*attempt=a0 .*ttl=3 how=discovered reason="hop 3 \(172\.16\.1\.1\) is the first outside/,
    );
    assertMatch(logs, /low TTL of the first SYN .*attempt=a1 .*ttl=3 how=cached/);
  });
});

Deno.test({
  name: "tcp-nutss discovers TTL 2 behind one NAT, toward a peer behind a double NAT",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "double", [], async (lab, clientA, clientB, services) => {
    const { a, b } = await punch(clientA, clientB, lab, "tcp-nutss", 0);
    a.close();
    b.close();
    assertMatch(
      services.a.logs(),
      /low TTL of the first SYN .*attempt=a0 .*ttl=2 how=discovered reason="hop 2 \(172\.16\.1\.1\)/,
    );
  });
});
