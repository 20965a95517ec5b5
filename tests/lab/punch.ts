/**
 * Drives both applications of one attempt in the lab through PunchdClient:
 * endpoint discovery, initiate, respond, and relaying every progress reply
 * to the other side (the example peer does the same through the rendezvous
 * server), plus the rule listing tests assert on.
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import { readExactly as readBytes } from "../helpers/daemon.ts";
import type { Socket } from "../../ffi/socket.ts";
import { type Attempt, PunchdClient, PunchdError } from "../../src/client/client.ts";
import { parseChoice, type TechniqueChoice } from "../../src/control/codec.ts";
import { Lab, type LabOptions, type NatProfile } from "./lab.ts";
import { type LabServices, startServices } from "./services.ts";

/** Reads exactly `length` bytes as text (10 s limit). */
export async function readExactly(socket: Socket, length: number): Promise<string> {
  return new TextDecoder().decode(await readBytes(socket, length));
}

/**
 * The guards (set elements) left in punchd's table in namespace `ns` once
 * the attempts that ended have let go of them (empty when there is no
 * table). punchd removes a successful attempt's guards right after its
 * `ok` (a failed one's before the `error`), so this looks again for up to
 * `settleMs`: a guard that is still there then has leaked (the guards'
 * own timeouts are the attempt's, seconds longer).
 */
export async function punchdGuards(lab: Lab, ns: string, settleMs = 2000): Promise<string[]> {
  const until = performance.now() + settleMs;
  for (;;) {
    const result = await lab.tryExec(ns, ["nft", "list", "table", "inet", "punchd"]);
    const left = result.stdout.split("\n").map((l) => l.trim()).filter((l) =>
      l.startsWith("elements =")
    );
    if (left.length === 0 || performance.now() >= until) return left;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Forwards later progress of either side to the other as peer data (the
 * initiator's from `fromA`, where its first line was already taken) until
 * both attempts end; resolves with both outcomes.
 */
export async function relayUntilSettled(
  initiator: Attempt,
  fromA: AsyncIterator<string>,
  responder: Attempt,
): Promise<[PromiseSettledResult<Socket>, PromiseSettledResult<Socket>]> {
  const relay = async (from: AsyncIterator<string>, to: Attempt) => {
    for (let next = await from.next(); !next.done; next = await from.next()) {
      await to.peer(next.value).catch(() => {});
    }
  };
  const relays = Promise.all([
    relay(fromA, responder),
    relay(responder.progress[Symbol.asyncIterator](), initiator),
  ]);
  const [a, b] = await Promise.allSettled([initiator.socket, responder.socket]);
  await relays;
  return [a, b];
}

/** Both ends of a punched connection and the endpoints the sides published. */
export interface Outcome {
  a: Socket;
  b: Socket;
  endpointA: { ip: string; ports: number[]; source: string };
  endpointB: { ip: string; ports: number[]; source: string };
  /** For `auto` and lists: the technique that connected, as the initiator's punchd reported it. */
  winner: string | null;
}

/** One attempt between host A (initiator, port 20000+n) and host B (responder, port 30000+n), over IPv4 or IPv6. */
export async function punch(
  clientA: PunchdClient,
  clientB: PunchdClient,
  lab: Lab,
  technique: TechniqueChoice,
  n: number,
  family: "inet" | "inet6" = "inet",
): Promise<Outcome> {
  const portA = 20000 + n;
  const portB = 30000 + n;
  const parsed = parseChoice(technique);
  const protocol = parsed.kind === "auto"
    ? parsed.protocol
    : parsed.technique.startsWith("udp")
    ? "udp"
    : "tcp";
  const hostA = family === "inet" ? lab.hostA.ip : lab.v6.hostA;
  const hostB = family === "inet" ? lab.hostB.ip : lab.v6.hostB;
  const endpointA = await clientA.endpoint(`ea${n}`, protocol, hostA, [portA]);
  const endpointB = await clientB.endpoint(`eb${n}`, protocol, hostB, [portB]);
  const initiator = clientA.initiate({
    id: `a${n}`,
    technique,
    srcIp: hostA,
    srcPorts: [portA],
    dstIp: endpointB.ip,
    dstPorts: endpointB.ports,
  });
  const fromA = initiator.progress[Symbol.asyncIterator]();
  const first = await fromA.next();
  if (first.done) {
    await initiator.socket;
    throw new Error("the initiator ended without progress");
  }
  const responder = clientB.respond({
    id: `b${n}`,
    technique,
    srcIp: hostB,
    srcPorts: [portB],
    dstIp: endpointA.ip,
    dstPorts: endpointA.ports,
    extra: first.value,
  });
  const [a, b] = await relayUntilSettled(initiator, fromA, responder);
  if (a.status === "rejected" || b.status === "rejected") {
    if (a.status === "fulfilled") a.value.close();
    if (b.status === "fulfilled") b.value.close();
    throw a.status === "rejected" ? a.reason : (b as PromiseRejectedResult).reason;
  }
  const winner = (await initiator.winner)?.technique ?? null;
  return { a: a.value, b: b.value, endpointA, endpointB, winner };
}

/**
 * Punches `count` TCP connections with `technique` and checks each the way
 * a user would: both sides published their NAT's public address with the
 * port preserved, each socket is connected to the other's NAT public
 * endpoint (direct, nothing relayed), and data flows both ways. No rule is
 * left in either punchd's table afterwards.
 */
export async function assertDirectTcpPunches(
  clientA: PunchdClient,
  clientB: PunchdClient,
  lab: Lab,
  technique: TechniqueChoice,
  count: number,
): Promise<void> {
  const bytes = (s: string) => new TextEncoder().encode(s);
  for (let n = 0; n < count; n++) {
    const { a, b, endpointA, endpointB } = await punch(clientA, clientB, lab, technique, n);
    try {
      assertEquals(endpointA, { ip: lab.publicA, ports: [20000 + n], source: "preserved" });
      assertEquals(endpointB, { ip: lab.publicB, ports: [30000 + n], source: "preserved" });
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
  assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
  assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
}

/**
 * Runs one attempt that must fail: returns punchd's error (a PunchdError) and
 * closes the sockets if it connected after all, so the assertion fails cleanly.
 */
export async function punchFailure(
  clientA: PunchdClient,
  clientB: PunchdClient,
  lab: Lab,
  technique: TechniqueChoice,
  n: number,
): Promise<PunchdError> {
  const outcome = await punch(clientA, clientB, lab, technique, n).then(
    (o) => o,
    (e) => e as Error,
  );
  if (!(outcome instanceof Error)) {
    outcome.a.close();
    outcome.b.close();
    throw new Error(`${technique} connected where it was expected to fail`);
  }
  if (!(outcome instanceof PunchdError)) throw outcome;
  return outcome;
}

/** Runs `fn` with a lab, its services and a client per daemon; tears all down. */
export async function withLab(
  natA: NatProfile,
  natB: NatProfile,
  daemonArgs: string[],
  fn: (lab: Lab, a: PunchdClient, b: PunchdClient, services: LabServices) => Promise<void>,
  more: Omit<LabOptions, "natA" | "natB"> = {},
): Promise<void> {
  await using lab = await Lab.create({ natA, natB, ...more });
  await using services = await startServices(lab, daemonArgs);
  const a = await PunchdClient.connect(services.a.socketPath);
  const b = await PunchdClient.connect(services.b.socketPath);
  try {
    await fn(lab, a, b, services);
  } catch (error) {
    throw new Error(
      `${
        (error as Error).message
      }\n--- punchd A ---\n${services.a.logs()}\n--- punchd B ---\n${services.b.logs()}`,
      { cause: error },
    );
  } finally {
    await a.close();
    await b.close();
  }
}
