import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import { PunchdError } from "../../src/client/client.ts";
import { PUNCH_MAGIC } from "../../src/techniques/udp.ts";
import { STRAYS_MESSAGE } from "../../src/techniques/udp_strays.ts";
import { punch, punchFailure, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(isRoot(), "udp lab tests", "network namespaces need root");
const bytes = (s: string) => new TextEncoder().encode(s);

/** Sends `text` over a connected UDP socket and reads the peer's datagram, which must be it. */
async function exchange(from: Socket, to: Socket, text: string): Promise<void> {
  await from.write(bytes(text));
  const buf = new Uint8Array(2048);
  const n = await to.read(buf, AbortSignal.timeout(3000));
  assertEquals(new TextDecoder().decode(buf.subarray(0, n)), text);
}

Deno.test({
  name: "udp punches through two port-preserving NATs 20 times out of 20, directly",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    for (let n = 0; n < 20; n++) {
      const { a, b } = await punch(clientA, clientB, lab, "udp", n);
      try {
        assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30000 + n });
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 20000 + n });
        await exchange(a, b, `datagram ${n} from A`);
        await exchange(b, a, `datagram ${n} from B`);
      } finally {
        a.close();
        b.close();
      }
    }
  });
});

Deno.test({
  name: "birthday probing gets udp through an endpoint-dependent NAT at least 19 times out of 20",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "symmetric",
    "preserving",
    ["--attempt-timeout", "10"],
    async (lab, clientA, clientB) => {
      let ok = 0;
      const failures: string[] = [];
      for (let n = 0; n < 20; n++) {
        try {
          const { a, b } = await punch(clientA, clientB, lab, "udp-birthday", n);
          try {
            // The easy side talks to a random public port of the hard side's NAT.
            assertEquals((b.peerAddress() as { address: string }).address, lab.publicA);
            assertEquals(a.peerAddress(), {
              family: "inet",
              address: lab.publicB,
              port: 30000 + n,
            });
            await exchange(a, b, `birthday ${n}`);
            await exchange(b, a, `back ${n}`);
            ok++;
          } finally {
            a.close();
            b.close();
          }
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
      assert(ok >= 19, `${ok} of 20: ${failures.join("; ")}`);
    },
  );
});

Deno.test({
  name:
    "with endpoint-dependent NATs on both sides udp-birthday gives up at once with a clear error",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "symmetric",
    "symmetric",
    ["--attempt-timeout", "10"],
    async (lab, clientA, clientB) => {
      const started = performance.now();
      const error = await punchFailure(clientA, clientB, lab, "udp-birthday", 0);
      assert(error instanceof PunchdError);
      assertMatch(error.reason, /udp gave up: both NATs map ports per destination/);
      assert(performance.now() - started < 10000, "it waited for the timeout instead of giving up");
    },
  );
});

Deno.test({
  name: "one server peer, five client peers: each gets a working direct UDP socket",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    const serverPort = 31000;
    const server = await clientB.endpoint("session", "udp", lab.hostB.ip, [serverPort]);
    const settled = await Promise.allSettled([0, 1, 2, 3, 4].map(async (i) => {
      const port = 21000 + i;
      const me = await clientA.endpoint(`c${i}`, "udp", lab.hostA.ip, [port]);
      const initiator = clientA.initiate({
        id: `client${i}`,
        technique: "udp",
        srcIp: lab.hostA.ip,
        srcPorts: [port],
        dstIp: server.ip,
        dstPorts: server.ports,
      });
      const progress = initiator.progress[Symbol.asyncIterator]();
      const offer = await progress.next();
      // The server peer answers every client on its one session port.
      const responder = clientB.respond({
        id: `session${i}`,
        technique: "udp",
        srcIp: lab.hostB.ip,
        srcPorts: [serverPort],
        dstIp: me.ip,
        dstPorts: me.ports,
        extra: offer.value ?? "",
      });
      const sockets = Promise.allSettled([initiator.socket, responder.socket]);
      for await (const data of responder.progress) await initiator.peer(data).catch(() => {});
      const [a, b] = await sockets;
      if (a.status === "fulfilled" && b.status === "fulfilled") {
        return { i, a: a.value, b: b.value };
      }
      if (a.status === "fulfilled") a.value.close();
      if (b.status === "fulfilled") b.value.close();
      const why = (r: PromiseSettledResult<Socket>) =>
        r.status === "rejected" ? (r.reason as Error).message : "connected";
      throw new Error(`client ${i}: ${why(a)}; server peer: ${why(b)}`);
    }));
    const clients = settled.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    const failures = settled.flatMap((r) =>
      r.status === "rejected" ? [(r.reason as Error).message] : []
    );
    try {
      assertEquals(failures, []);
      for (const { i, a, b } of clients) {
        assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: serverPort });
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 21000 + i });
        assertEquals((b.localAddress() as { port: number }).port, serverPort);
        await exchange(a, b, `client ${i} to server`);
        await exchange(b, a, `server to client ${i}`);
      }
    } finally {
      for (const { a, b } of clients) {
        a.close();
        b.close();
      }
    }
  });
});

/** Python for host C: spoofed punch-shaped datagrams with random MACs, bounded in count and time. */
function sprayer(src: string, sport: number, dst: string, dport: number, count: number): string {
  return `
import os, socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
src, dst = socket.inet_aton("${src}"), socket.inet_aton("${dst}")
for i in range(${count}):
    payload = b"${PUNCH_MAGIC}" + b"RI"[i % 2:i % 2 + 1] + bytes([i % 2]) + os.urandom(36)
    udp = struct.pack("!HHHH", ${sport}, ${dport}, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xffff, 0, 64, 17, 0, src, dst)
    s.sendto(ip + udp, ("${dst}", 0))
    time.sleep(0.005)
print("sent", ${count})
`;
}

Deno.test({
  name: "forged punches from a third host never complete an attempt and are logged once a second",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "preserving",
    "preserving",
    ["--attempt-timeout", "3"],
    async (lab, clientA, _clientB, services) => {
      // A punches towards B's public endpoint, but B never answers; host C
      // forges B's address and port, so its datagrams pass A's NAT.
      const attempt = clientA.initiate({
        id: "lonely",
        technique: "udp",
        srcIp: lab.hostA.ip,
        srcPorts: [22000],
        dstIp: lab.publicB,
        dstPorts: [32000],
      });
      await attempt.progress[Symbol.asyncIterator]().next();
      const spray = lab.tryExec(lab.hostC.ns, [
        "python3",
        "-c",
        sprayer(lab.publicB, 32000, lab.publicA, 22000, 400),
      ]);
      const error = await attempt.socket.then((s) => {
        s.close();
        return null;
      }, (e) => e);
      const sprayed = await spray;
      assertEquals(sprayed.stdout.trim(), "sent 400", sprayed.stderr);
      assert(error instanceof PunchdError, "a forged punch completed the attempt");
      assertMatch(error.reason, /timed out after 3000 ms/);
      // The forgeries did reach the attempt's socket (and were ignored
      // there), and 400 of them in 2 s wrote a few summary lines, not 400.
      const lines = services.a.logs().split("\n").filter((l) => l.includes(STRAYS_MESSAGE));
      const forged = lines.reduce((sum, l) => sum + Number(l.match(/ forged=(\d+)/)?.[1] ?? 0), 0);
      assert(forged > 0, "no forged datagram reached the attempt: the test proved nothing");
      assert(lines.length <= 5, `${lines.length} lines for ${forged} forged datagrams`);
    },
    { thirdHost: true },
  );
});
