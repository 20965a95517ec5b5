import { assert, assertEquals, assertMatch } from "../assert.ts";
import type { Attempt, PunchdClient } from "../../src/client/client.ts";
import type { Socket } from "../../ffi/socket.ts";
import { isPublic, type Lab, type NatProfile } from "../lab/lab.ts";
import { punchdGuards, relayUntilSettled, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "tcp-prime/udp-prime lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");
const NC = "/bin/nc.openbsd";
const hasNc = (() => {
  try {
    return Deno.statSync(NC).isFile;
  } catch {
    return false;
  }
})();
const needsNc = skipUnless(hasNc, ROOT, `${NC} is missing (Debian package netcat-openbsd)`);
const ignore = needsRoot || needsNc;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ATTEMPTS = 4;

type Technique = "tcp-prime" | "udp-prime";

/** Where both hosts sit: each behind a router of `nat`, over `family`. */
interface Setup {
  what: string;
  nat: NatProfile;
  family: "inet" | "inet6";
}

const SETUPS: Setup[] = [
  { what: "IPv6 behind RFC 6092 stateful firewalls (no NAT)", nat: "firewall", family: "inet6" },
  { what: "IPv4 behind stateful firewalls (no NAT)", nat: "firewall", family: "inet" },
  { what: "IPv4 behind port-preserving NATs", nat: "preserving", family: "inet" },
];

/** The hosts' own addresses and the addresses the other side reaches them at. */
function addressesOf(lab: Lab, setup: Setup) {
  const v6 = setup.family === "inet6";
  const hostA = v6 ? lab.v6.hostA : lab.hostA.ip;
  const hostB = v6 ? lab.v6.hostB : lab.hostB.ip;
  const open = isPublic(setup.nat);
  return {
    hostA,
    hostB,
    publicA: open ? hostA : v6 ? lab.v6.publicA : lab.publicA,
    publicB: open ? hostB : v6 ? lab.v6.publicB : lab.publicB,
  };
}

/**
 * Makes router `ns` count the inbound TCP and UDP packets its conntrack
 * finds unsolicited (state new): a primed flow's first packet from the
 * peer is a reply (established), so with priming that works the count
 * stays 0; a peer packet that met an unprimed firewall counts (and is
 * dropped, so the attempt only survives on retransmissions).
 */
async function watchUnsolicited(lab: Lab, ns: string): Promise<void> {
  await lab.exec(
    ns,
    ["nft", "-f", "-"],
    `table inet primewatch {
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    iifname "wan0" ct state new meta l4proto { tcp, udp } counter
  }
}
`,
  );
}

/** What {@linkcode watchUnsolicited} counted. */
async function unsolicited(lab: Lab, ns: string): Promise<number> {
  const table = await lab.exec(ns, ["nft", "list", "table", "inet", "primewatch"]);
  const count = table.match(/counter packets (\d+)/)?.[1];
  assert(count !== undefined, `no counter in ${table}`);
  return Number(count);
}

/** Reads one chunk (a datagram, or what a stream has) as text, within 5 s. */
async function readText(socket: Socket): Promise<string> {
  const buf = new Uint8Array(512);
  const n = await socket.read(buf, AbortSignal.timeout(5000));
  return decoder.decode(buf.subarray(0, n));
}

/** The responder's first progress: it must be "primed1", right away. */
async function primed(attempt: Attempt): Promise<void> {
  const next = await attempt.progress[Symbol.asyncIterator]().next();
  assertEquals(next.done ? "(ended)" : next.value, "primed1");
}

/** nc in namespace `ns`, its stdin open for writing, its stdout collected. */
class Nc {
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #out = "";
  readonly #reading: Promise<void>;

  constructor(lab: Lab, ns: string, args: string[]) {
    const child = lab.spawn(ns, [NC, ...args], { stdin: "piped" });
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.#reading = (async () => {
      for await (const chunk of child.stdout) this.#out += decoder.decode(chunk);
    })();
    child.stderr.pipeTo(new WritableStream()).catch(() => {});
  }

  async write(text: string): Promise<void> {
    await this.#stdin.write(encoder.encode(text));
  }

  /** Waits until nc printed `text` (5 s at most). */
  async printed(text: string): Promise<void> {
    for (let i = 0; i < 100 && !this.#out.includes(text); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(this.#out, text);
  }

  /** Kills nc and reaps it; safe to call twice. */
  async stop(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await this.#child.status;
    await this.#reading.catch(() => {});
  }
}

/**
 * One attempt with nc in host A as the initiator (no punchd involved on
 * A's side): B responds with EXTRA "prime1", A's nc starts after B's
 * "primed1", and data flows both ways, nc's first bytes included.
 */
async function ncAttempt(
  lab: Lab,
  clientB: PunchdClient,
  setup: Setup,
  technique: Technique,
  n: number,
): Promise<void> {
  const { hostB, publicA, publicB } = addressesOf(lab, setup);
  const portA = 21000 + n;
  const portB = 31000 + n;
  const responder = clientB.respond({
    id: `nc${n}`,
    technique,
    srcIp: hostB,
    srcPorts: [portB],
    dstIp: publicA,
    dstPorts: [portA],
    extra: "prime1",
  });
  await primed(responder);
  const udp = technique === "udp-prime" ? ["-u"] : [];
  const nc = new Nc(lab, lab.hostA.ns, [...udp, "-p", String(portA), publicB, String(portB)]);
  let b: Socket | undefined;
  try {
    await nc.write(`hello from nc ${n}\n`);
    b = await responder.socket;
    assertEquals(b.peerAddress(), { family: setup.family, address: publicA, port: portA });
    assertEquals(b.localAddress(), { family: setup.family, address: hostB, port: portB });
    // nc's first datagram (or bytes) is the application's, not lost on the way.
    assertEquals(await readText(b), `hello from nc ${n}\n`);
    await b.write(encoder.encode(`hello nc ${n}\n`));
    await nc.printed(`hello nc ${n}\n`);
  } finally {
    b?.close();
    await responder.cancel().catch(() => {});
    await responder.socket.then((s) => s.close(), () => {});
    await nc.stop();
  }
}

/**
 * One attempt with punchd on both sides (each side passes the other's
 * public endpoint as the application would publish it); data both ways.
 */
async function punchdAttempt(
  lab: Lab,
  clientA: PunchdClient,
  clientB: PunchdClient,
  setup: Setup,
  technique: Technique,
  n: number,
): Promise<void> {
  const { hostA, hostB, publicA, publicB } = addressesOf(lab, setup);
  const portA = 20000 + n;
  const portB = 30000 + n;
  const initiator = clientA.initiate({
    id: `a${n}`,
    technique,
    srcIp: hostA,
    srcPorts: [portA],
    dstIp: publicB,
    dstPorts: [portB],
  });
  const fromA = initiator.progress[Symbol.asyncIterator]();
  const first = await fromA.next();
  const responder = clientB.respond({
    id: `b${n}`,
    technique,
    srcIp: hostB,
    srcPorts: [portB],
    dstIp: publicA,
    dstPorts: [portA],
    extra: first.done ? "(none)" : first.value,
  });
  const [sa, sb] = await relayUntilSettled(initiator, fromA, responder);
  const a = sa.status === "fulfilled" ? sa.value : undefined;
  const b = sb.status === "fulfilled" ? sb.value : undefined;
  try {
    if (sa.status === "rejected") throw sa.reason;
    if (sb.status === "rejected") throw sb.reason;
    assert(a !== undefined && b !== undefined);
    assertEquals(a.localAddress(), { family: setup.family, address: hostA, port: portA });
    assertEquals(a.peerAddress(), { family: setup.family, address: publicB, port: portB });
    assertEquals(b.localAddress(), { family: setup.family, address: hostB, port: portB });
    assertEquals(b.peerAddress(), { family: setup.family, address: publicA, port: portA });
    await a.write(encoder.encode(`ping ${n}`));
    assertEquals(await readText(b), `ping ${n}`);
    await b.write(encoder.encode(`pong ${n}`));
    assertEquals(await readText(a), `pong ${n}`);
  } finally {
    a?.close();
    b?.close();
  }
}

for (const setup of SETUPS) {
  for (const technique of ["tcp-prime", "udp-prime"] as const) {
    Deno.test({
      name:
        `${technique}: nc as the initiator (no punchd on its side) reaches a responder ${setup.what}, ${ATTEMPTS} of ${ATTEMPTS}`,
      ignore,
    }, async () => {
      await withLab(setup.nat, setup.nat, [], async (lab, _clientA, clientB) => {
        await watchUnsolicited(lab, lab.routerB.ns);
        for (let n = 0; n < ATTEMPTS; n++) await ncAttempt(lab, clientB, setup, technique, n);
        assertEquals(await unsolicited(lab, lab.routerB.ns), 0);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
      }, { ipv6: setup.family === "inet6" });
    });

    Deno.test({
      name: `${technique}: punchd on both sides, ${setup.what}, ${ATTEMPTS} of ${ATTEMPTS}`,
      ignore,
    }, async () => {
      await withLab(setup.nat, setup.nat, [], async (lab, clientA, clientB) => {
        await watchUnsolicited(lab, lab.routerB.ns);
        for (let n = 0; n < ATTEMPTS; n++) {
          await punchdAttempt(lab, clientA, clientB, setup, technique, n);
        }
        assertEquals(await unsolicited(lab, lab.routerB.ns), 0);
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
      }, { ipv6: setup.family === "inet6" });
    });
  }
}

/** B's primed socket as the third host C sees it: `nc` from C with A's very port. */
for (const technique of ["tcp-prime", "udp-prime"] as const) {
  Deno.test({
    name:
      `${technique}: a third host using the peer's port never gets the primed socket, and the peer still does`,
    ignore,
  }, async () => {
    // B has no firewall at all: only punchd's own choice of socket keeps C out.
    await withLab("preserving", "none", [], async (lab, _clientA, clientB) => {
      const udp = technique === "udp-prime" ? ["-u"] : [];
      const portA = 22000;
      const portB = 32000;
      const responder = clientB.respond({
        id: "third",
        technique,
        srcIp: lab.hostB.ip,
        srcPorts: [portB],
        dstIp: lab.publicA,
        dstPorts: [portA],
        extra: "prime1",
      });
      let settled: Socket | Error | null = null;
      responder.socket.then((s) => settled = s, (e) => settled = e as Error);
      await primed(responder);
      const intruder = new Nc(lab, lab.hostC.ns, [
        ...udp,
        "-p",
        String(portA),
        lab.hostB.ip,
        String(portB),
      ]);
      let peer: Nc | undefined;
      let b: Socket | undefined;
      try {
        for (let i = 0; i < 5; i++) {
          await intruder.write(`intruder ${i}\n`).catch(() => {});
          await new Promise((r) => setTimeout(r, 200));
        }
        assertEquals(settled, null, "the attempt ended on the third host's packets");
        peer = new Nc(lab, lab.hostA.ns, [
          ...udp,
          "-p",
          String(portA),
          lab.hostB.ip,
          String(portB),
        ]);
        await peer.write("the real peer\n");
        b = await responder.socket;
        assertEquals(b.peerAddress(), { family: "inet", address: lab.publicA, port: portA });
        assertEquals(await readText(b), "the real peer\n");
      } finally {
        b?.close();
        await responder.cancel().catch(() => {});
        await responder.socket.then((s) => s.close(), () => {});
        await intruder.stop();
        await peer?.stop();
      }
      assert(settled !== null);
    }, { thirdHost: true });
  });
}

for (const technique of ["tcp-prime", "udp-prime"] as const) {
  Deno.test({
    name:
      `${technique}: a responder whose peer never comes and an initiator never told "primed1" give up at the deadline, leaving no guard`,
    ignore,
  }, async () => {
    await withLab(
      "firewall",
      "firewall",
      ["--attempt-timeout", "2"],
      async (lab, clientA, clientB) => {
        const started = performance.now();
        const responder = clientB.respond({
          id: "alone",
          technique,
          srcIp: lab.hostB.ip,
          srcPorts: [33000],
          dstIp: lab.hostA.ip,
          dstPorts: [23000],
          extra: "prime1",
        });
        const initiator = clientA.initiate({
          id: "unheard",
          technique,
          srcIp: lab.hostA.ip,
          srcPorts: [23001],
          dstIp: lab.hostB.ip,
          dstPorts: [33001],
        });
        const [b, a] = await Promise.allSettled([responder.socket, initiator.socket]);
        const elapsed = performance.now() - started;
        for (const outcome of [a, b]) {
          if (outcome.status === "fulfilled") outcome.value.close();
          assertEquals(outcome.status, "rejected");
        }
        assertMatch(String((b as PromiseRejectedResult).reason), /timed out after 2000 ms/);
        assertMatch(
          String((a as PromiseRejectedResult).reason),
          /timed out after 2000 ms \(last: waiting for the responder's "primed1"\)/,
        );
        assert(elapsed < 2000 + 3000, `took ${elapsed} ms`);
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
      },
    );
  });
}

Deno.test({
  name:
    "tcp-prime: an initiator whose SYNs are refused (nothing primed, nothing listening) gives up after 10 connects, long before the deadline",
  ignore,
}, async () => {
  await withLab("firewall", "none", [], async (lab, clientA) => {
    const started = performance.now();
    const initiator = clientA.initiate({
      id: "refused",
      technique: "tcp-prime",
      srcIp: lab.hostA.ip,
      srcPorts: [24000],
      dstIp: lab.hostB.ip,
      dstPorts: [34000],
    });
    const first = await initiator.progress[Symbol.asyncIterator]().next();
    assertEquals(first.value, "prime1");
    // As if a responder had primed: host B has no socket on the port, so its kernel refuses.
    await initiator.peer("primed1");
    const error = await initiator.socket.then((s) => {
      s.close();
      return null;
    }, (e) => e as Error);
    const elapsed = performance.now() - started;
    assertMatch(String(error), /tcp-prime failed: .*ECONNREFUSED/);
    assert(elapsed < 8000, `took ${elapsed} ms (the deadline is 10 s)`);
    assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
  });
});

for (const technique of ["tcp-prime", "udp-prime"] as const) {
  Deno.test({
    name:
      `${technique}: no socket or guard outlives an attempt: success with nc and with punchd, bad peer data, timeout, cancel`,
    ignore,
  }, async () => {
    const setup = SETUPS[1] as Setup;
    await withLab(
      "firewall",
      "firewall",
      ["--attempt-timeout", "3"],
      async (lab, clientA, clientB, services) => {
        // Warm up both workers so that their own fds are in the baseline (only sockets count).
        await punchdAttempt(lab, clientA, clientB, setup, technique, 0);
        await new Promise((r) => setTimeout(r, 300));
        const baseline = [services.a.socketFdCount(), services.b.socketFdCount()];
        const settled = async (what: string) => {
          assertEquals(await punchdGuards(lab, lab.hostA.ns), [], what);
          assertEquals(await punchdGuards(lab, lab.hostB.ns), [], what);
          assertEquals(
            [
              await services.a.settledSocketFdCount(baseline[0] ?? 0),
              await services.b.settledSocketFdCount(baseline[1] ?? 0),
            ],
            baseline,
            what,
          );
        };
        await punchdAttempt(lab, clientA, clientB, setup, technique, 1);
        await settled("after success with punchd");
        await ncAttempt(lab, clientB, setup, technique, 2);
        await settled("after success with nc");

        const initiate = (n: number) =>
          clientA.initiate({
            id: `x${n}`,
            technique,
            srcIp: lab.hostA.ip,
            srcPorts: [20000 + n],
            dstIp: lab.hostB.ip,
            dstPorts: [30000 + n],
          });
        const respond = (n: number) =>
          clientB.respond({
            id: `y${n}`,
            technique,
            srcIp: lab.hostB.ip,
            srcPorts: [30000 + n],
            dstIp: lab.hostA.ip,
            dstPorts: [20000 + n],
            extra: "prime1",
          });
        // Each outcome gets its handler when the attempt starts: it may end while the test waits.
        const outcome = (attempt: Attempt) =>
          attempt.socket.then((s) => (s.close(), null), (e) => e);

        const confused = initiate(3);
        const confusedEnd = outcome(confused);
        await confused.progress[Symbol.asyncIterator]().next();
        await confused.peer("bogus");
        assertMatch(String(await confusedEnd), /expects the peer data "primed1"/);
        await settled("after bad peer data");

        const lonely = respond(4);
        assertMatch(String(await outcome(lonely)), /timed out after 3000 ms/);
        await settled("after a timeout");

        const waiting = initiate(5);
        const waitingEnd = outcome(waiting);
        await waiting.progress[Symbol.asyncIterator]().next();
        const primedOne = respond(6);
        const primedEnd = outcome(primedOne);
        await primed(primedOne);
        await Promise.all([waiting.cancel(), primedOne.cancel()]);
        for (const end of await Promise.all([waitingEnd, primedEnd])) {
          assertMatch(String(end), /cancelled: by client/);
        }
        await settled("after cancel");
      },
    );
  });
}
