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
import { spawnService, waitForOutput } from "../lab/services.ts";
import { hasCommand, isRoot, skipUnless } from "../helpers/skip.ts";

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
    ["--attempt-timeout", "3"],
    async (lab, clientA, clientB, services) => {
      const settled = async () => {
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
        return [
          await services.a.settledSocketFdCount(baselineA),
          await services.b.settledSocketFdCount(baselineB),
        ];
      };
      // Warm up both workers so that their own fds are in the baseline. Only sockets count: the
      // Deno runtime opens and closes files of its own (its caches) whenever it likes.
      const warm = await punch(clientA, clientB, lab, "tcp-syni", 0);
      warm.a.close();
      warm.b.close();
      await new Promise((r) => setTimeout(r, 300));
      const baselineA = services.a.socketFdCount();
      const baselineB = services.b.socketFdCount();

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
      // Each outcome gets its handler when the attempt starts: it may end while the test waits.
      const outcome = (attempt: ReturnType<typeof start>) =>
        attempt.socket.then(() => null, (e) => e);
      const failing = start(2);
      const failed = outcome(failing);
      await failing.progress[Symbol.asyncIterator]().next();
      await failing.peer("bogus");
      const failure = await failed;
      assert(failure instanceof PunchdError);
      assertMatch(failure.reason, /expected "syniready"/);
      assertEquals(await settled(), [baselineA, baselineB], "after failure");

      // Timeout: nobody responds.
      const lonely = start(3);
      const timeout = await outcome(lonely);
      assert(timeout instanceof PunchdError);
      assertMatch(timeout.reason, /timed out after 3000 ms/);
      assertEquals(await settled(), [baselineA, baselineB], "after timeout");

      // Cancel, on both sides, mid-attempt (the responder holds its capture and raw sockets).
      const initiator = start(4);
      const initiated = outcome(initiator);
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
      const responded = outcome(responder);
      await responder.progress[Symbol.asyncIterator]().next();
      await Promise.all([initiator.cancel(), responder.cancel()]);
      for (const e of await Promise.all([initiated, responded])) {
        assert(e instanceof PunchdError);
        assertEquals(e.reason, "cancelled: by client");
      }
      assertEquals(await settled(), [baselineA, baselineB], "after cancel");
    },
  );
});

/** One TCP segment host B sent, as tcpdump printed it: capture time (ms), flow, flags, TSval. */
interface Sent {
  ms: number;
  port: number;
  flags: string;
  tsval: number;
  length: number;
}

/**
 * Parses `tcpdump -n -tt -l` lines of segments from `ip` to `peer` that carry
 * the timestamp option (not, say, the endpoint discovery's from the same port).
 */
function parseSent(output: string, ip: string, peer: string): Sent[] {
  const escape = (address: string) => address.replaceAll(".", "\\.");
  const line = new RegExp(
    `^(\\d+\\.\\d+) IP ${escape(ip)}\\.(\\d+) > ${
      escape(peer)
    }\\.\\d+: Flags \\[([^\\]]*)\\].*TS val (\\d+) ecr \\d+.*length (\\d+)`,
  );
  return output.split("\n").flatMap((text) => {
    const m = text.match(line);
    return m === null ? [] : [{
      ms: Number(m[1]) * 1000,
      port: Number(m[2]),
      flags: m[3] ?? "",
      tsval: Number(m[4]),
      length: Number(m[5]),
    }];
  });
}

const TSVAL_TEST =
  "on the wire, a responder's TSvals count milliseconds on from its priming SYN, on every socket of 10";
const hasTcpdump = hasCommand("tcpdump");

Deno.test({
  name: TSVAL_TEST,
  ignore: needsRoot || skipUnless(hasTcpdump, TSVAL_TEST, "no tcpdump (apt-get install tcpdump)"),
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    // B's own segments before its NAT: the priming SYN, the SYN-ACKs, then the repaired socket's.
    const capture = spawnService(lab, lab.hostB.ns, [
      "tcpdump",
      "-i",
      "eth0",
      "-n",
      "-tt",
      "-l",
      "-U",
      `tcp and src host ${lab.hostB.ip} and src portrange 30000-30009`,
    ]);
    try {
      await waitForOutput(capture, /listening on/);
      const pairs = [];
      try {
        // Since Linux 6.7 an odd TCP_TIMESTAMP value makes a socket tick in microseconds:
        // 10 sockets leave a random value's luck one chance in 1024.
        for (let n = 0; n < 10; n++) pairs.push(await punch(clientA, clientB, lab, "tcp-syni", n));
        for (const { b } of pairs) await b.write(bytes("x"));
        await new Promise((r) => setTimeout(r, 700));
        for (const { b } of pairs) await b.write(bytes("y"));
        for (const { a } of pairs) assertEquals(await readExactly(a, 2), "xy");
      } finally {
        for (const { a, b } of pairs) {
          a.close();
          b.close();
        }
      }
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await capture.stop();
    }
    const sent = parseSent(capture.output(), lab.hostB.ip, lab.publicA);
    for (let n = 0; n < 10; n++) {
      const flow = sent.filter((s) => s.port === 30000 + n);
      const [priming] = flow;
      assert(priming !== undefined && priming.flags === "S", `flow ${n}: no priming SYN seen`);
      const data = flow.filter((s) => s.length === 1);
      assertEquals(data.length, 2, `flow ${n}: the two one-byte writes`);
      const [x, y] = data as [Sent, Sent];
      assert(y.ms - x.ms >= 600, `flow ${n}: writes ${y.ms - x.ms} ms apart`);
      // Every segment's TSval has advanced from the priming SYN's by the time that passed, in
      // milliseconds: 200 ms and 20% allow for a busy machine between stamping a raw packet and
      // its send (a microsecond clock is 1000 times off, at least 600 000 by the second write).
      for (const s of flow) {
        const elapsed = s.ms - priming.ms;
        const advanced = (s.tsval - priming.tsval) >>> 0;
        assert(
          Math.abs(advanced - elapsed) <= 200 + elapsed / 5,
          `flow ${n}: [${s.flags}] TSval advanced ${advanced} in ${elapsed.toFixed(1)} ms`,
        );
      }
    }
  });
});

/**
 * Three tcp-syni attempts where `endpoint` predicts two ports for the side behind a NAT that
 * allocates ports in sequence (`delta+1`), passed on to the peer as they are: each connects
 * directly, to the public port that NAT gave the flow, one of the two predicted.
 */
async function assertSequentialPunches(sequential: "a" | "b"): Promise<void> {
  await withLab(
    sequential === "a" ? "sequential" : "preserving",
    sequential === "b" ? "sequential" : "preserving",
    [],
    async (lab, clientA, clientB) => {
      for (let n = 0; n < 3; n++) {
        const { a, b, endpointA, endpointB } = await punch(clientA, clientB, lab, "tcp-syni", n);
        try {
          const predicted = sequential === "a" ? endpointA : endpointB;
          assertEquals(predicted.source, "delta+1");
          assertEquals(predicted.ports.length, 2);
          const [first = 0] = predicted.ports;
          assertEquals(predicted.ports, [first, first + 1]);
          const peerOfA = a.peerAddress() as { address: string; port: number };
          const peerOfB = b.peerAddress() as { address: string; port: number };
          assertEquals(peerOfA.address, lab.publicB);
          assertEquals(peerOfB.address, lab.publicA);
          if (sequential === "a") {
            assertEquals(peerOfA.port, 30000 + n);
            assert(endpointA.ports.includes(peerOfB.port), `B reached A at ${peerOfB.port}`);
          } else {
            assertEquals(peerOfB.port, 20000 + n);
            assert(endpointB.ports.includes(peerOfA.port), `A reached B at ${peerOfA.port}`);
          }
          await a.write(bytes(`ping ${n}`));
          assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
          await b.write(bytes(`pong ${n}`));
          assertEquals(await readExactly(a, `pong ${n}`.length), `pong ${n}`);
        } finally {
          a.close();
          b.close();
        }
      }
      assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
      assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
    },
  );
}

Deno.test({
  name:
    "behind a responder's NAT that allocates ports in sequence, tcp-syni tries both ports endpoint predicts and connects directly",
  ignore: needsRoot,
}, async () => {
  await assertSequentialPunches("b");
});

Deno.test({
  name:
    "behind an initiator's NAT that allocates ports in sequence, the responder primes both ports endpoint predicts and tcp-syni connects directly",
  ignore: needsRoot,
}, async () => {
  await assertSequentialPunches("a");
});
