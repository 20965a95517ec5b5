import { assertEquals, assertMatch } from "../assert.ts";
import { runDemo } from "../../src/examples/demo.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const NAME =
  "the example peers punch through the lab with tcp-nutss via the rendezvous server and exchange messages";
Deno.test({
  name: NAME,
  ignore: skipUnless(isRoot(), NAME, "network namespaces and nftables need root"),
}, async () => {
  const { codes, outputs } = await runDemo();
  assertEquals(codes, [0, 0], outputs.join("\n---\n"));
  const [a, b] = outputs;
  assertMatch(a, /published 172\.16\.1\.2 4000 \(preserved\)/);
  assertMatch(
    a,
    /connected to bob with tcp-nutss in \d+ ms: local 10\.0\.1\.2:4000, remote 172\.16\.2\.2:5000/,
  );
  assertMatch(a, /^hello from B$/m);
  assertMatch(
    b,
    /connected to alice with tcp-nutss in \d+ ms: local 10\.0\.2\.2:5000, remote 172\.16\.1\.2:4000/,
  );
  assertMatch(b, /^hello from A$/m);
});
