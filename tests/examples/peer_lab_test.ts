import { assertEquals, assertMatch } from "../assert.ts";
import { runDemo } from "../../src/examples/demo.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

// `auto` (the demo's default) must pick tcp-nutss between two port-preserving NATs.
for (
  const [choice, technique] of [["auto", "tcp-nutss"], ["tcp-nutss", "tcp-nutss"], [
    "tcp-syni",
    "tcp-syni",
  ], ["udp", "udp"]] as const
) {
  const name =
    `the example peers punch through the lab with ${choice} via the rendezvous server and exchange messages`;
  Deno.test({
    name,
    ignore: skipUnless(isRoot(), name, "network namespaces and nftables need root"),
  }, async () => {
    const { codes, outputs } = await runDemo({ technique: choice });
    assertEquals(codes, [0, 0], outputs.join("\n---\n"));
    const [a, b] = outputs;
    assertMatch(a, /published 172\.16\.1\.2 4000 \(preserved\)/);
    assertMatch(
      a,
      new RegExp(
        `connected to bob with ${technique} in \\d+ ms: local 10\\.0\\.1\\.2:4000, remote 172\\.16\\.2\\.2:5000`,
      ),
    );
    assertMatch(a, /^hello from B$/m);
    assertMatch(
      b,
      new RegExp(
        `connected to alice with ${technique} in \\d+ ms: local 10\\.0\\.2\\.2:5000, remote 172\\.16\\.1\\.2:4000`,
      ),
    );
    assertMatch(b, /^hello from A$/m);
  });
}
