/**
 * Security issue #8, item 6: a blind off-path attacker (the lab's third host
 * C, which can spoof source addresses) who knows only the two public
 * endpoints forges TCP segments into a running tcp-nutss or tcp-syni attempt.
 *
 * The attack is timed deterministically: the test holds the initiator's
 * first progress data, lets C send while the initiator's NAT already has the
 * flow (its low-TTL SYN went out), and only then lets the responder start.
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import type { PunchdClient } from "../../src/client/client.ts";
import type { TechniqueName } from "../../src/control/codec.ts";
import type { Socket } from "../../ffi/socket.ts";
import type { Lab } from "../lab/lab.ts";
import { punchdGuards, readExactly, relayUntilSettled, withLab } from "../lab/punch.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(
  isRoot(),
  "tcp spoofing lab tests",
  "network namespaces, raw sockets and nftables need root",
);

const SPOOF = new URL("../fixtures/spoof_tcp.ts", import.meta.url).pathname;
const bytes = (s: string) => new TextEncoder().encode(s);

/** One forged-segment run of the fixture in C's namespace. */
interface Spoof {
  from: string;
  to: string;
  flags: "syn" | "syn-ack" | "rst";
  count: number;
  withinMs: number;
}

function spoofCommand(s: Spoof): string[] {
  return [
    Deno.execPath(),
    "run",
    "--allow-ffi",
    "--allow-read",
    SPOOF,
    "--from",
    s.from,
    "--to",
    s.to,
    "--flags",
    s.flags,
    "--count",
    String(s.count),
    "--within-ms",
    String(s.withinMs),
  ];
}

/** How one attempt ended on each side. */
interface Sides {
  a: PromiseSettledResult<Socket>;
  b: PromiseSettledResult<Socket>;
}

/**
 * One attempt (A initiates from port 20000+n to B's 30000+n) with `attack`
 * run after A's first progress and before B responds; `attack` may leave
 * something `running` (a flood), which the attempt's end waits for too.
 */
async function punchUnderAttack(
  clientA: PunchdClient,
  clientB: PunchdClient,
  lab: Lab,
  technique: TechniqueName,
  n: number,
  attack: () => Promise<{ running: Promise<void> }>,
): Promise<Sides> {
  const portA = 20000 + n;
  const portB = 30000 + n;
  const initiator = clientA.initiate({
    id: `a${n}`,
    technique,
    srcIp: lab.hostA.ip,
    srcPorts: [portA],
    dstIp: lab.publicB,
    dstPorts: [portB],
  });
  const fromA = initiator.progress[Symbol.asyncIterator]();
  const first = await fromA.next();
  if (first.done) {
    return {
      a: await initiator.socket.then(
        (s) => ({ status: "fulfilled", value: s }),
        (e) => ({ status: "rejected", reason: e }),
      ),
      b: { status: "rejected", reason: new Error("never started") },
    };
  }
  const { running } = await attack();
  const responder = clientB.respond({
    id: `b${n}`,
    technique,
    srcIp: lab.hostB.ip,
    srcPorts: [portB],
    dstIp: lab.publicA,
    dstPorts: [portA],
    extra: first.value,
  });
  const [a, b] = await relayUntilSettled(initiator, fromA, responder);
  await running;
  return { a, b };
}

/** Counts of outcomes over several attempts. */
interface Tally {
  connected: number;
  bothFailed: number;
  /** One side got `ok`, the other an error: the case that must never happen. */
  oneSided: number;
}

/** Checks a connected pair carries data both ways, then closes it. */
async function checkAndClose(sides: Sides, n: number): Promise<void> {
  if (sides.a.status !== "fulfilled" || sides.b.status !== "fulfilled") return;
  const a = sides.a.value;
  const b = sides.b.value;
  try {
    await a.write(bytes(`ping ${n}`));
    assertEquals(await readExactly(b, `ping ${n}`.length), `ping ${n}`);
    await b.write(bytes(`pong ${n}`));
    assertEquals(await readExactly(a, `pong ${n}`.length), `pong ${n}`);
  } finally {
    a.close();
    b.close();
  }
}

function tally(results: Sides[]): Tally {
  const t: Tally = { connected: 0, bothFailed: 0, oneSided: 0 };
  for (const { a, b } of results) {
    if (a.status === "fulfilled" && b.status === "fulfilled") t.connected++;
    else if (a.status === "rejected" && b.status === "rejected") t.bothFailed++;
    else t.oneSided++;
  }
  return t;
}

function closeAll(results: Sides[]): void {
  for (const { a, b } of results) {
    if (a.status === "fulfilled") a.value.close();
    if (b.status === "fulfilled") b.value.close();
  }
}

/**
 * Starts the fixture in C's namespace and resolves once its raw socket is
 * open and its first packet about to leave; `running` settles when it has
 * sent them all (and checks it did).
 */
async function startSpoof(lab: Lab, spoof: Spoof): Promise<{ running: Promise<void> }> {
  const child = lab.spawn(lab.hostC.ns, spoofCommand(spoof));
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("sending")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  const running = (async () => {
    for (let next = await reader.read(); !next.done; next = await reader.read()) {
      text += next.value;
    }
    const [status, stderr] = await Promise.all([child.status, new Response(child.stderr).text()]);
    assertEquals([status.code, text], [0, `sending ${spoof.count}\nsent ${spoof.count}\n`], stderr);
  })();
  return { running };
}

/** Lines of a daemon's log at WARN level or above. */
function warnings(log: string): string[] {
  return log.split("\n").filter((line) => / (WARN|ERROR) /.test(line));
}

const ATTEMPTS = 5;
const TECHNIQUES: TechniqueName[] = ["tcp-nutss", "tcp-syni"];

for (const technique of TECHNIQUES) {
  Deno.test({
    name:
      `${technique} connects ${ATTEMPTS} of ${ATTEMPTS} when one blind SYN-ACK with random numbers hits the initiator's NAT mid-attempt`,
    ignore: needsRoot,
  }, async () => {
    await withLab("preserving", "preserving", ["--attempt-timeout", "10"], async (lab, a, b) => {
      const results: Sides[] = [];
      try {
        for (let n = 0; n < ATTEMPTS; n++) {
          const sides = await punchUnderAttack(a, b, lab, technique, n, async () => {
            const spoof = await startSpoof(lab, {
              from: `${lab.publicB}:${30000 + n}`,
              to: `${lab.publicA}:${20000 + n}`,
              flags: "syn-ack",
              count: 1,
              withinMs: 0,
            });
            // Only once it has left does the responder start.
            await spoof.running;
            return { running: Promise.resolve() };
          });
          results.push(sides);
          await checkAndClose(sides, n);
        }
        assertEquals(tally(results), { connected: ATTEMPTS, bothFailed: 0, oneSided: 0 });
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
      } finally {
        closeAll(results);
      }
    }, { thirdHost: true });
  });

  // tcp-nutss connects through the flood every time. tcp-syni does not always (see
  // tcp_flow_guard.ts on what a NAT learns from forged SYN-ACKs during the handshake), but both
  // sides always agree.
  const mustConnect = technique === "tcp-nutss";
  Deno.test({
    name: mustConnect
      ? `${technique} connects ${ATTEMPTS} of ${ATTEMPTS} through a flood of 2000 blind SYN-ACKs in 2 s at the initiator's NAT, and logs stay quiet`
      : `${technique} under a flood of 2000 blind SYN-ACKs in 2 s at the initiator's NAT never reports ok on one side alone, and logs stay quiet`,
    ignore: needsRoot,
  }, async () => {
    await withLab(
      "preserving",
      "preserving",
      ["--attempt-timeout", "12"],
      async (lab, a, b, services) => {
        const results: Sides[] = [];
        try {
          for (let n = 0; n < ATTEMPTS; n++) {
            const sides = await punchUnderAttack(a, b, lab, technique, n, () =>
              startSpoof(lab, {
                from: `${lab.publicB}:${30000 + n}`,
                to: `${lab.publicA}:${20000 + n}`,
                flags: "syn-ack",
                count: 2000,
                withinMs: 2000,
              }));
            results.push(sides);
            await checkAndClose(sides, n);
          }
          const t = tally(results);
          if (mustConnect) assertEquals(t, { connected: ATTEMPTS, bothFailed: 0, oneSided: 0 });
          else assertEquals(t.oneSided, 0, JSON.stringify(t));
          const logged = [...warnings(services.a.logs()), ...warnings(services.b.logs())];
          assertEquals(logged, []);
          assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
          assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
        } finally {
          closeAll(results);
        }
      },
      { thirdHost: true },
    );
  });
}

Deno.test({
  name:
    "a flood of 2000 forged SYNs at the tcp-syni responder writes a few warning lines, each with the count it held back",
  ignore: needsRoot,
}, async () => {
  await withLab(
    "preserving",
    "preserving",
    ["--attempt-timeout", "4"],
    async (lab, a, b, services) => {
      const results: Sides[] = [];
      try {
        for (let n = 0; n < 2; n++) {
          // Forged SYNs from A's public endpoint reach B's capture once B's priming SYN opened
          // B's NAT. They also corrupt B's NAT's state of the flow (tcp_flow_guard.ts), which
          // punchd cannot repair from B's side: whether the attempt connects is not the point here.
          const sides = await punchUnderAttack(a, b, lab, "tcp-syni", n, () =>
            startSpoof(lab, {
              from: `${lab.publicA}:${20000 + n}`,
              to: `${lab.publicB}:${30000 + n}`,
              flags: "syn",
              count: 2000,
              withinMs: 2000,
            }));
          results.push(sides);
        }
        const lines = warnings(services.b.logs());
        const mismatched = lines.filter((l) => l.includes("ignoring a SYN that does not match"));
        // Per attempt (4 s at most): one line at once, at most one a second, one at the end.
        assert(mismatched.length >= 2, `the flood never reached the capture:\n${lines.join("\n")}`);
        assert(mismatched.length <= 2 * 6, `too many lines:\n${lines.join("\n")}`);
        // How many of the 2,000 pass B's NAT depends on when the forgeries corrupt its state of
        // the flow (a CI run saw 9 and 6): a held-back count is what the lines must show.
        assert(mismatched.some((l) => / suppressed=[1-9]\d*/.test(l)), lines.join("\n"));
        assertEquals(lines.length, mismatched.length, lines.join("\n"));
        assertEquals(warnings(services.a.logs()), []);
        assertEquals(await punchdGuards(lab, lab.hostA.ns), []);
        assertEquals(await punchdGuards(lab, lab.hostB.ns), []);
      } finally {
        closeAll(results);
      }
    },
    { thirdHost: true },
  );
});
