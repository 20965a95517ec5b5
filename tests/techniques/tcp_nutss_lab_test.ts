import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { Socket } from "../../ffi/socket.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import type { TechniqueName } from "../../src/control/codec.ts";
import { Lab, type NatProfile, netemAvailable } from "../lab/lab.ts";
import { startServices } from "../lab/services.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

async function readExactly(socket: Socket, length: number): Promise<string> {
  const out = new Uint8Array(length);
  let offset = 0;
  while (offset < length) {
    const n = await socket.read(out.subarray(offset), AbortSignal.timeout(10000));
    if (n === 0) throw new Error(`end of stream after ${offset} bytes`);
    offset += n;
  }
  return text(out);
}

/** The rules in punchd's table in namespace `ns` (empty when there is no table). */
async function punchdRules(lab: Lab, ns: string): Promise<string[]> {
  const result = await lab.tryExec(ns, ["nft", "-a", "list", "table", "inet", "punchd"]);
  return result.stdout.split("\n").map((l) => l.trim()).filter((l) =>
    / # handle \d+$/.test(l) && !/^(table|chain) /.test(l)
  );
}

interface Outcome {
  a: Socket;
  b: Socket;
  endpointA: { ip: string; ports: number[]; source: string };
  endpointB: { ip: string; ports: number[]; source: string };
}

/**
 * One attempt as two applications would run it: each learns its endpoint
 * through punchd (probe servers), the initiator's progress data reaches the
 * responder (here directly; the example peer uses the rendezvous server).
 */
async function punch(
  clientA: PunchdClient,
  clientB: PunchdClient,
  lab: Lab,
  technique: TechniqueName,
  n: number,
): Promise<Outcome> {
  const portA = 20000 + n;
  const portB = 30000 + n;
  const endpointA = await clientA.endpoint(`ea${n}`, "tcp", lab.hostA.ip, [portA]);
  const endpointB = await clientB.endpoint(`eb${n}`, "tcp", lab.hostB.ip, [portB]);
  const initiator = clientA.initiate({
    id: `a${n}`,
    technique,
    srcIp: lab.hostA.ip,
    srcPorts: [portA],
    dstIp: endpointB.ip,
    dstPorts: endpointB.ports,
  });
  const progress = await initiator.progress[Symbol.asyncIterator]().next();
  if (progress.done) {
    await initiator.socket;
    throw new Error("the initiator ended without progress");
  }
  const responder = clientB.respond({
    id: `b${n}`,
    technique,
    srcIp: lab.hostB.ip,
    srcPorts: [portB],
    dstIp: endpointA.ip,
    dstPorts: endpointA.ports,
    extra: progress.value,
  });
  const [a, b] = await Promise.allSettled([initiator.socket, responder.socket]);
  if (a.status === "rejected" || b.status === "rejected") {
    if (a.status === "fulfilled") a.value.close();
    if (b.status === "fulfilled") b.value.close();
    throw a.status === "rejected" ? a.reason : (b as PromiseRejectedResult).reason;
  }
  return { a: a.value, b: b.value, endpointA, endpointB };
}

async function withLab(
  natA: NatProfile,
  natB: NatProfile,
  daemonArgs: string[],
  fn: (lab: Lab, a: PunchdClient, b: PunchdClient) => Promise<void>,
  wan?: { delayMs?: number; lossPercent?: number },
): Promise<void> {
  await using lab = await Lab.create(wan ? { natA, natB, wan } : { natA, natB });
  await using services = await startServices(lab, daemonArgs);
  const a = await PunchdClient.connect(services.a.socketPath);
  const b = await PunchdClient.connect(services.b.socketPath);
  try {
    await fn(lab, a, b);
  } catch (error) {
    throw new Error(
      `${
        (error as Error).message
      }\n--- punchd A ---\n${services.a.logs()}\n--- punchd B ---\n${services.b.logs()}`,
      {
        cause: error,
      },
    );
  } finally {
    await a.close();
    await b.close();
  }
}

const ROOT = "tcp-nutss lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

Deno.test({
  name:
    "tcp-nutss punches through two port-preserving NATs 10 times out of 10, directly, data both ways",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", "preserving", [], async (lab, clientA, clientB) => {
    for (let n = 0; n < 10; n++) {
      const { a, b, endpointA, endpointB } = await punch(clientA, clientB, lab, "tcp-nutss", n);
      try {
        assertEquals(endpointA, { ip: lab.publicA, ports: [20000 + n], source: "preserved" });
        assertEquals(endpointB, { ip: lab.publicB, ports: [30000 + n], source: "preserved" });
        // Direct: each side's socket is connected to the other's NAT public endpoint.
        assertEquals(a.localAddress(), { family: "inet", address: lab.hostA.ip, port: 20000 + n });
        assertEquals(a.peerAddress(), { family: "inet", address: lab.publicB, port: 30000 + n });
        assertEquals(b.localAddress(), { family: "inet", address: lab.hostB.ip, port: 30000 + n });
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: 20000 + n });
        await a.write(bytes(`ping ${n}`));
        assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
        await b.write(bytes(`pong ${n}`));
        assertEquals(await readExactly(a, `pong ${n}`.length), `pong ${n}`);
      } finally {
        a.close();
        b.close();
      }
    }
    assertEquals(await punchdRules(lab, lab.hostA.ns), []);
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
      const error = await punch(clientA, clientB, lab, "tcp-nutss", 0).then(
        (o) => {
          o.a.close();
          o.b.close();
          return null;
        },
        (e) => e,
      );
      const elapsed = performance.now() - started;
      assert(error instanceof PunchdError, `expected a PunchdError, got ${error}`);
      assertMatch(error.reason, /timed out after 3000 ms/);
      assert(elapsed < 3000 + 5000, `took ${elapsed} ms`);
      assertEquals(await punchdRules(lab, lab.hostA.ns), []);
      assertEquals(await punchdRules(lab, lab.hostB.ns), []);
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
    assertMatch(a.source, /^(random|delta[+-]\d+)$/);
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
    { delayMs: 30, lossPercent: 2 },
  );
});
