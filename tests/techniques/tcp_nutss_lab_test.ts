import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdError } from "../../src/client/client.ts";
import { netemAvailable } from "../lab/lab.ts";
import {
  assertDirectTcpPunches,
  punch,
  punchdGuards,
  punchFailure,
  readExactly,
  withLab,
} from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

const ROOT = "tcp-nutss lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

Deno.test({
  name:
    "tcp-nutss punches through two port-preserving NATs 10 times out of 10, directly, data both ways",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    await assertDirectTcpPunches(clientA, clientB, lab, "tcp-nutss", 10);
  });
});

Deno.test({
  name:
    "tcp-nutss against a symmetric NAT fails within its timeout with a clear error and leaves no rules",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "symmetric",
    "preserving",
    ["--attempt-timeout", "3"],
    async (lab, clientA, clientB) => {
      const started = performance.now();
      const error = await punchFailure(clientA, clientB, lab, "tcp-nutss", 0);
      const elapsed = performance.now() - started;
      assert(error instanceof PunchdError, `expected a PunchdError, got ${error}`);
      assertMatch(error.reason, /timed out after 3000 ms/);
      assert(elapsed < 3000 + 5000, `took ${elapsed} ms`);
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
});

Deno.test({
  name: "endpoint discovery tells a port-preserving NAT from a symmetric one",
  ignore: needsRoot,
}, async () => {
  await withLab("symmetric", "preserving", [], async (lab, clientA, clientB) => {
    const a = await clientA.endpoint("e1", "tcp", lab.hostA.ip, [21000]);
    assertEquals(a.ip, lab.publicA);
    assertEquals(a.source, "random");
    const udp = await clientB.endpoint("e2", "udp", lab.hostB.ip, [31000]);
    assertEquals(udp, { ip: lab.publicB, ports: [31000], source: "preserved" });
  });
});

const NETEM = "tcp-nutss punches through WAN links with 30 ms delay and 2% loss";
Deno.test({
  name: NETEM,
  ignore: needsRoot ||
    skipUnless(await netemAvailable(), NETEM, "this kernel has no netem qdisc (sch_netem)"),
}, async () => {
  await withLab(
    "preserving",
    "preserving",
    ["--attempt-timeout", "20"],
    async (lab, clientA, clientB) => {
      for (let n = 0; n < 3; n++) {
        const { a, b } = await punch(clientA, clientB, lab, "tcp-nutss", n);
        try {
          await a.write(bytes("over a slow link"));
          assertEquals(await readExactly(b, 16), "over a slow link");
        } finally {
          a.close();
          b.close();
        }
      }
    },
    { wan: { delayMs: 30, lossPercent: 2 } },
  );
});
