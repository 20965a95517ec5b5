/**
 * `udp`'s and `udp-prime`'s hand-over on loopback, both sides run in this
 * process through a relay that can delay or drop datagrams one way:
 * whatever happens to the punches, each application's first read after
 * `ok` is the other application's data, never a punch (or a hello, ack or
 * done); and a lost LAST punch still ends in a hand-over. No lab, no root.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { Logger, type LogRecord } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import type { AttemptContext } from "../../src/techniques/technique.ts";
import { Udp } from "../../src/techniques/udp.ts";
import { primeMessage, UdpPrime, type UdpPrimeOptions } from "../../src/techniques/udp_prime.ts";
import { PUNCH_LENGTH } from "../../src/techniques/udp_punch.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Peer data for a context: `push` delivers it to the attempt, now or when it asks. */
class PeerData {
  #queued: string[] = [];
  #waiting: ((data: string) => void)[] = [];

  push(data: string): void {
    const waiter = this.#waiting.shift();
    if (waiter !== undefined) waiter(data);
    else this.#queued.push(data);
  }

  next(signal: AbortSignal): Promise<string> {
    const queued = this.#queued.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.#waiting.push(resolve);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
}

/** One side's context: its progress goes to `onProgress`, its log records to `records`. */
function context(
  signal: AbortSignal,
  peerData: PeerData,
  onProgress: (data: string) => void,
  records: LogRecord[],
): AttemptContext {
  return {
    signal,
    progress: onProgress,
    nextPeerData: () => peerData.next(signal),
    log: new Logger("debug", (r) => records.push(r)),
    noteError: () => {},
    firewall: { add: () => Promise.resolve(1), remove: () => Promise.resolve() },
  };
}

/** A datagram socket on 127.0.0.1, any port. */
function udpSocket(): Socket {
  const socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  return socket;
}

function portOf(socket: Socket): number {
  const address = socket.localAddress();
  return address.family === "unix" ? 0 : address.port;
}

/** Two free ports on 127.0.0.1. */
function freePorts(): [number, number] {
  const sockets = [udpSocket(), udpSocket()];
  const ports = sockets.map(portOf);
  for (const s of sockets) s.close();
  return [ports[0] ?? 0, ports[1] ?? 0];
}

/** What the relay does with one datagram: pass it now, drop it, or pass it this many ms late. */
type Verdict = "pass" | "drop" | number;

/** True for a punch whose FLAGS say SEEN and LAST. */
const isLast = (data: Uint8Array) => data.length === PUNCH_LENGTH && data[5] === 0x03;
/** True for a punch whose FLAGS say SEEN only. */
const isSeen = (data: Uint8Array) => data.length === PUNCH_LENGTH && data[5] === 0x01;

/**
 * A relay on loopback between A and B: A punches `forA`, B punches `forB`.
 * Each datagram goes through its direction's rule; a delay keeps the
 * direction's order (one fixed delay per direction in these tests).
 */
class Relay {
  readonly forA = udpSocket();
  readonly forB = udpSocket();
  /** Datagrams each way, with the verdict each got. */
  readonly seen: { toA: [Uint8Array, Verdict][]; toB: [Uint8Array, Verdict][] } = {
    toA: [],
    toB: [],
  };
  readonly #stop = new AbortController();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #loops: Promise<void>[];
  readonly #a: InetAddress;
  readonly #b: InetAddress;

  constructor(
    portA: number,
    portB: number,
    rules: { toA?: (d: Uint8Array) => Verdict; toB?: (d: Uint8Array) => Verdict },
  ) {
    const a = inetAddress("127.0.0.1", portA);
    const b = inetAddress("127.0.0.1", portB);
    this.#a = a;
    this.#b = b;
    const pump = async (
      from: Socket,
      to: Socket,
      address: InetAddress,
      rule: (d: Uint8Array) => Verdict,
      log: [Uint8Array, Verdict][],
    ) => {
      const buf = new Uint8Array(2048);
      try {
        for (;;) {
          const { length } = await from.receiveFrom(buf, this.#stop.signal);
          const data = buf.slice(0, length);
          const verdict = rule(data);
          log.push([data, verdict]);
          if (verdict === "drop") continue;
          if (verdict === "pass") {
            await to.sendTo(data, address).catch(() => {});
            continue;
          }
          const timer = setTimeout(() => {
            this.#timers.delete(timer);
            to.sendTo(data, address).catch(() => {});
          }, verdict);
          this.#timers.add(timer);
        }
      } catch {
        // Stopped.
      }
    };
    this.#loops = [
      pump(this.forA, this.forB, b, rules.toB ?? (() => "pass"), this.seen.toB),
      pump(this.forB, this.forA, a, rules.toA ?? (() => "pass"), this.seen.toA),
    ];
  }

  /**
   * Sends every datagram seen so far again, each to the side it was for: what
   * a peer whose event loop ran seconds late would still send after the
   * hand-over. Resolves once all have left.
   */
  async replay(which: (d: Uint8Array) => boolean = () => true): Promise<number> {
    let sent = 0;
    for (const [data] of this.seen.toA.filter(([d]) => which(d))) {
      await this.forA.sendTo(data.slice(), this.#a);
      sent++;
    }
    for (const [data] of this.seen.toB.filter(([d]) => which(d))) {
      await this.forB.sendTo(data.slice(), this.#b);
      sent++;
    }
    return sent;
  }

  async close(): Promise<void> {
    this.#stop.abort();
    for (const timer of this.#timers) clearTimeout(timer);
    await Promise.all(this.#loops);
    this.forA.close();
    this.forB.close();
  }
}

/** How each side handed over, from its "udp punched" log line. */
function handover(records: LogRecord[]): string | undefined {
  return records.find((r) => r.message === "udp punched")?.fields.handover;
}

/**
 * 300 ms after both sockets arrived (whatever was still on its way through
 * the relay has landed), each application sends one datagram; each side's
 * first read must be the other's.
 */
async function exchangeFirst(a: Socket, b: Socket): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  await a.write(encoder.encode("data from A"));
  await b.write(encoder.encode("data from B"));
  const buf = new Uint8Array(2048);
  const m = await b.read(buf, AbortSignal.timeout(3000));
  assertEquals(decoder.decode(buf.subarray(0, m)), "data from A");
  const n = await a.read(buf, AbortSignal.timeout(3000));
  assertEquals(decoder.decode(buf.subarray(0, n)), "data from B");
}

/**
 * Waits for both sides' sockets, runs `afterHandover`, checks each side's
 * first read (exchangeFirst), and releases the sockets, the attempts and
 * the relay on every path.
 */
async function settle(
  initiator: Promise<Socket>,
  responder: () => Promise<Socket> | undefined,
  relay: Relay,
  controller: AbortController,
  afterHandover: (relay: Relay) => Promise<void>,
): Promise<void> {
  try {
    const a = await initiator;
    const b = await (responder() ?? Promise.reject(new Error("the initiator sent no offer")));
    try {
      await afterHandover(relay);
      await exchangeFirst(a, b);
    } finally {
      a.close();
      b.close();
    }
  } finally {
    controller.abort();
    await initiator.then((s) => s.close(), () => {});
    await responder()?.then((s) => s.close(), () => {});
    await relay.close();
  }
}

/**
 * Runs one `udp` attempt between A (initiator) and B (responder) through a
 * relay with `rules`; once both have their sockets, each application sends
 * one datagram, and each side's first read must be the other's (see
 * exchangeFirst). Returns the
 * relay's record and how each side handed over.
 */
async function attempt(
  rules: { toA?: (d: Uint8Array) => Verdict; toB?: (d: Uint8Array) => Verdict },
  afterHandover: (relay: Relay) => Promise<void> = () => Promise.resolve(),
): Promise<{ relay: Relay["seen"]; a: string | undefined; b: string | undefined }> {
  const [portA, portB] = freePorts();
  const relay = new Relay(portA, portB, rules);
  const controller = new AbortController();
  const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(5000)]);
  const toA = new PeerData();
  const toB = new PeerData();
  const recordsA: LogRecord[] = [];
  const recordsB: LogRecord[] = [];
  const spec = (over: Partial<AttemptSpec>): AttemptSpec => ({
    technique: "udp",
    role: "initiate",
    id: "h",
    client: 1,
    srcIp: "127.0.0.1",
    srcPorts: [portA],
    dstIp: "127.0.0.1",
    dstPorts: [portOf(relay.forA)],
    timeoutMs: 5000,
    ...over,
  });
  let responder: Promise<Socket> | undefined;
  const initiator = new Udp().run(
    spec({}),
    context(signal, toA, (offer) => {
      // The responder starts with the initiator's offer, as an application would.
      responder ??= new Udp().run(
        spec({
          role: "respond",
          srcPorts: [portB],
          dstPorts: [portOf(relay.forB)],
          extra: offer,
        }),
        context(signal, toB, (answer) => toA.push(answer), recordsB),
      );
    }, recordsA),
  );
  await settle(initiator, () => responder, relay, controller, afterHandover);
  return { relay: relay.seen, a: handover(recordsA), b: handover(recordsB) };
}

Deno.test("without loss both sides hand over on the other's LAST punch, and each sends exactly one", async () => {
  const { relay, a, b } = await attempt({});
  assertEquals([a, b], ["last", "last"]);
  assertEquals(relay.toA.filter(([d]) => isLast(d)).length, 1);
  assertEquals(relay.toB.filter(([d]) => isLast(d)).length, 1);
});

Deno.test("with every LAST from B lost, A still hands over (fallback) and no application reads a punch", async () => {
  const { relay, a, b } = await attempt({ toA: (d) => isLast(d) ? "drop" : "pass" });
  assert(relay.toA.some(([d, v]) => isLast(d) && v === "drop"), "no LAST of B's was dropped");
  assertEquals(a, "fallback");
  assertEquals(b, "last");
});

Deno.test("with the first LAST lost both ways, both sides hand over on the fallback", async () => {
  const dropFirst = () => {
    let lasts = 0;
    return (d: Uint8Array): Verdict => isLast(d) && lasts++ === 0 ? "drop" : "pass";
  };
  const { relay, a, b } = await attempt({ toA: dropFirst(), toB: dropFirst() });
  // Each side sent one LAST, and it was lost.
  assertEquals(relay.toA.filter(([d]) => isLast(d)).map(([, v]) => v), ["drop"]);
  assertEquals(relay.toB.filter(([d]) => isLast(d)).map(([, v]) => v), ["drop"]);
  assertEquals([a, b], ["fallback", "fallback"]);
});

Deno.test("with every SEEN punch from B lost, B's LAST alone tells A that B is done, and both hand over on a LAST", async () => {
  const { relay, a, b } = await attempt({ toA: (d) => isSeen(d) ? "drop" : "pass" });
  assert(relay.toA.some(([d, v]) => isSeen(d) && v === "drop"), "no SEEN punch of B's was dropped");
  assertEquals([a, b], ["last", "last"]);
});

for (const [way, ms] of [["toA", 60], ["toB", 60], ["toA", 130]] as const) {
  Deno.test(`with every datagram ${way === "toA" ? "B→A" : "A→B"} ${ms} ms late (longer than a punch interval), no application reads a punch`, async () => {
    const { a, b } = await attempt({ [way]: () => ms });
    assertEquals([a, b], ["last", "last"]);
  });
}

/**
 * One `udp-prime` attempt between two punchds through a relay with
 * `rules`, both sides with `options`, within 5 s; each side's first read
 * must be the other application's datagram (see exchangeFirst). Returns
 * the relay's record.
 */
async function primeAttempt(
  rules: { toA?: (d: Uint8Array) => Verdict; toB?: (d: Uint8Array) => Verdict },
  options: UdpPrimeOptions,
  afterHandover: (relay: Relay) => Promise<void> = () => Promise.resolve(),
): Promise<Relay["seen"]> {
  const [portA, portB] = freePorts();
  const relay = new Relay(portA, portB, rules);
  const controller = new AbortController();
  const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(5000)]);
  const toA = new PeerData();
  const spec = (over: Partial<AttemptSpec>): AttemptSpec => ({
    technique: "udp-prime",
    role: "initiate",
    id: "p",
    client: 1,
    srcIp: "127.0.0.1",
    srcPorts: [portA],
    dstIp: "127.0.0.1",
    dstPorts: [portOf(relay.forA)],
    timeoutMs: 5000,
    ...over,
  });
  let responder: Promise<Socket> | undefined;
  const initiator = new UdpPrime(options).run(
    spec({}),
    context(signal, toA, (offer) => {
      responder ??= new UdpPrime(options).run(
        spec({ role: "respond", srcPorts: [portB], dstPorts: [portOf(relay.forB)], extra: offer }),
        context(signal, new PeerData(), (primed) => toA.push(primed), []),
      );
    }, []),
  );
  await settle(initiator, () => responder, relay, controller, afterHandover);
  return relay.seen;
}

/** The datagrams of `kind` (hello, ack, done) in a relay's record, by verdict. */
function primes(log: [Uint8Array, Verdict][], kind: "h" | "a" | "d"): Verdict[] {
  return log.filter(([d]) => decoder.decode(d).startsWith(primeMessage(kind, ""))).map(([, v]) =>
    v
  );
}

Deno.test("udp-prime: one hello answered, both sides hand over without lingering", async () => {
  // A linger of 60 s would outlast the attempt's 5 s: both must hand over without it.
  const seen = await primeAttempt({}, { lingerMs: 60_000 });
  assertEquals(primes(seen.toB, "h"), ["pass"]);
  assertEquals(primes(seen.toA, "a"), ["pass"]);
  assertEquals(primes(seen.toB, "d"), ["pass"]);
});

Deno.test("udp-prime: acks 800 ms late, the initiator hands over once every hello's ack is in, and no application reads one", async () => {
  const seen = await primeAttempt({ toA: () => 800 }, { lingerMs: 60_000 });
  const hellos = primes(seen.toB, "h").length;
  assert(hellos >= 3, `${hellos} hellos: the acks were not late enough to test anything`);
  assertEquals(primes(seen.toA, "a").length, hellos);
});

Deno.test("udp-prime: the first ack 300 ms late, behind the second hello's, the initiator waits for it and no application reads it", async () => {
  let acks = 0;
  const seen = await primeAttempt({
    toA: (d) => decoder.decode(d).startsWith(primeMessage("a", "")) && acks++ === 0 ? 300 : "pass",
  }, { lingerMs: 60_000 });
  assertEquals(primes(seen.toA, "a"), [300, "pass"]);
});

Deno.test("every punch replayed after both sides handed over (a peer seconds late) is dropped by the socket's filter, not read by the application", async () => {
  let replayed = 0;
  const result = await attempt({}, async (relay) => {
    replayed = await relay.replay();
  });
  assert(replayed >= 4, `only ${replayed} datagrams were replayed`);
  assert(result.relay.toA.length > 0 && result.relay.toB.length > 0);
});

Deno.test("udp-prime: every hello, ack and done replayed after both sides handed over is dropped by the socket's filter", async () => {
  let replayed = 0;
  const late = (d: Uint8Array) =>
    ["h", "a", "d"].some((k) =>
      decoder.decode(d).startsWith(primeMessage(k as "h" | "a" | "d", ""))
    );
  await primeAttempt({}, {}, async (relay) => {
    replayed = await relay.replay(late);
  });
  assert(replayed >= 3, `only ${replayed} datagrams were replayed`);
});
