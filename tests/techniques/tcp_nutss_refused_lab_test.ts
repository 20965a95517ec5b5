/**
 * tcp-nutss gives up early when the peer's NAT keeps refusing (RST) its
 * SYNs: the flow it punches has no mapping there, so waiting for the
 * deadline cannot help.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdError } from "../../src/client/client.ts";
import { punchdGuards, relayUntilSettled, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-nutss refused lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

Deno.test({
  name:
    "tcp-nutss toward a port the peer's RST-answering NAT has not mapped fails after ~3 s of refusals, not at the 10 s deadline",
  ignore: needsRoot,
}, async () => {
  await withLab("rst", "preserving", [], async (lab, clientA, clientB) => {
    const endpointA = await clientA.endpoint("ea", "tcp", lab.hostA.ip, [20000]);
    const endpointB = await clientB.endpoint("eb", "tcp", lab.hostB.ip, [30000]);
    const initiator = clientA.initiate({
      id: "a0",
      technique: "tcp-nutss",
      srcIp: lab.hostA.ip,
      srcPorts: [20000],
      dstIp: endpointB.ip,
      dstPorts: endpointB.ports,
    });
    const fromA = initiator.progress[Symbol.asyncIterator]();
    const first = await fromA.next();
    assert(!first.done, "the initiator ended without progress");
    const started = performance.now();
    // A wrong prediction of A's port: B's SYNs reach a port A's NAT has no mapping for.
    const responder = clientB.respond({
      id: "b0",
      technique: "tcp-nutss",
      srcIp: lab.hostB.ip,
      srcPorts: [30000],
      dstIp: endpointA.ip,
      dstPorts: [(endpointA.ports[0] ?? 0) + 1],
      extra: first.value,
    });
    const failed = responder.socket.then(
      (s) => (s.close(), null),
      (e) => ({ error: e as Error, ms: performance.now() - started }),
    );
    const settled = relayUntilSettled(initiator, fromA, responder);
    const outcome = await failed;
    await initiator.cancel();
    const [a] = await settled;
    if (a.status === "fulfilled") a.value.close();
    assert(outcome !== null, "the responder connected");
    assert(outcome.error instanceof PunchdError, `expected a PunchdError, got ${outcome.error}`);
    assertMatch(
      outcome.error.reason,
      /tcp-nutss failed: 172\.16\.1\.2:20001 refused \d+ connects in \d+\.\d s \(its NAT has no mapping/,
    );
    assert(outcome.ms >= 3000 && outcome.ms < 6000, `failed after ${outcome.ms} ms`);
    assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
    assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
  });
});
