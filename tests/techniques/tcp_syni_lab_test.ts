import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdError } from "../../src/client/client.ts";
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
const needsRoot = skipUnless(
  isRoot(),
  "tcp-syni lab tests",
  "network namespaces, raw sockets and TCP_REPAIR need root",
);

Deno.test({
  name:
    "tcp-syni punches through two port-preserving NATs 10 times out of 10, directly, data both ways",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    await assertDirectTcpPunches(clientA, clientB, lab, "tcp-syni", 10);
  });
});

Deno.test({
  name:
    "a repaired connection performs like a normal one: a megabyte each way with the negotiated options",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    const { a, b } = await punch(clientA, clientB, lab, "tcp-syni", 50);
    try {
      const size = 1 << 20;
      const payload = crypto.getRandomValues(new Uint8Array(65536));
      const send = async (socket: typeof a) => {
        for (let sent = 0; sent < size; sent += payload.length) await socket.write(payload);
      };
      const receive = async (socket: typeof a) => {
        const buf = new Uint8Array(65536);
        let got = 0;
        while (got < size) {
          const n = await socket.read(buf, AbortSignal.timeout(20000));
          assert(n > 0, "end of stream too early");
          got += n;
        }
        return got;
      };
      const [, , gotB, gotA] = await Promise.all([send(a), send(b), receive(b), receive(a)]);
      assertEquals([gotA, gotB], [size, size]);
    } finally {
      a.close();
      b.close();
    }
  });
});

Deno.test({
  name:
    "behind a NAT without simultaneous open on the initiator's side, tcp-syni connects directly",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "nosimopen",
    "preserving",
    ["--attempt-timeout", "4"],
    async (lab, clientA, clientB) => {
      // tcp-syni never shows the initiator's NAT an inbound SYN.
      const { a, b } = await punch(clientA, clientB, lab, "tcp-syni", 1);
      try {
        assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30001 });
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 20001 });
        await a.write(bytes("through"));
        assertEquals(await readExactly(b, 7), "through");
      } finally {
        a.close();
        b.close();
      }
      // tcp-nutss gets through here too, but only because the initiator's SYN
      // retransmission (full TTL, after ~1 s) meets a responder's NAT that
      // supports simultaneous open; see the next test for where that is gone.
      const nutss = await punch(clientA, clientB, lab, "tcp-nutss", 2);
      nutss.a.close();
      nutss.b.close();
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
});

Deno.test({
  name: "when neither NAT supports simultaneous open, tcp-nutss fails cleanly within its timeout",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "nosimopen",
    "nosimopen",
    ["--attempt-timeout", "3"],
    async (lab, clientA, clientB) => {
      const error = await punchFailure(clientA, clientB, lab, "tcp-nutss", 0);
      assert(error instanceof PunchdError, `tcp-nutss should fail here, got ${error}`);
      assertMatch(error.reason, /timed out after 3000 ms/);
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
});

Deno.test({
  name:
    "no capture or raw socket, rule or fd outlives a tcp-syni attempt: success, failure, timeout, cancel",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "preserving",
    "preserving",
    ["--attempt-timeout", "2"],
    async (lab, clientA, clientB, services) => {
      const settled = async () => {
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
        return [
          await services.a.settledFdCount(baselineA),
          await services.b.settledFdCount(baselineB),
        ];
      };
      // Warm up both workers so that their own fds are in the baseline.
      const warm = await punch(clientA, clientB, lab, "tcp-syni", 0);
      warm.a.close();
      warm.b.close();
      await new Promise((r) => setTimeout(r, 300));
      const baselineA = services.a.fdCount();
      const baselineB = services.b.fdCount();

      // Success.
      const ok = await punch(clientA, clientB, lab, "tcp-syni", 1);
      ok.a.close();
      ok.b.close();
      assertEquals(await settled(), [baselineA, baselineB], "after success");

      const start = (n: number) =>
        clientA.initiate({
          id: `x${n}`,
          technique: "tcp-syni",
          srcIp: lab.hostA.ip,
          srcPorts: [20000 + n],
          dstIp: lab.publicB,
          dstPorts: [30000 + n],
        });
      // Failure: the peer answers with something else than "syniready".
      const failing = start(2);
      await failing.progress[Symbol.asyncIterator]().next();
      await failing.peer("bogus");
      const failure = await failing.socket.then(() => null, (e) => e);
      assert(failure instanceof PunchdError);
      assertMatch(failure.reason, /expected "syniready"/);
      assertEquals(await settled(), [baselineA, baselineB], "after failure");

      // Timeout: nobody responds.
      const lonely = start(3);
      const timeout = await lonely.socket.then(() => null, (e) => e);
      assert(timeout instanceof PunchdError);
      assertMatch(timeout.reason, /timed out after 2000 ms/);
      assertEquals(await settled(), [baselineA, baselineB], "after timeout");

      // Cancel, on both sides, mid-attempt (the responder holds its capture and raw sockets).
      const initiator = start(4);
      const info = await initiator.progress[Symbol.asyncIterator]().next();
      const responder = clientB.respond({
        id: "y4",
        technique: "tcp-syni",
        srcIp: lab.hostB.ip,
        srcPorts: [30004],
        dstIp: lab.publicA,
        dstPorts: [20004],
        extra: info.value ?? "",
      });
      await responder.progress[Symbol.asyncIterator]().next();
      await Promise.all([initiator.cancel(), responder.cancel()]);
      for (const attempt of [initiator, responder]) {
        const e = await attempt.socket.then(() => null, (err) => err);
        assert(e instanceof PunchdError);
        assertEquals(e.reason, "cancelled: by client");
      }
      assertEquals(await settled(), [baselineA, baselineB], "after cancel");
    },
  );
});
