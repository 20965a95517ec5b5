/**
 * Interop with a standard STUN server: coturn (Debian's `turnserver`) is
 * the only discovery server in the lab (`--stun` at its two addresses; the
 * first offers RFC 5780). `endpoint` over UDP and TCP must give the right
 * mapping under each NAT profile, with the RFC 5780 behaviour on UDP, and
 * `auto` must connect as with punchd's own server.
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { punch, readExactly } from "../lab/punch.ts";
import { hasCoturn, startStunServer } from "../lab/stun_server.ts";
import { type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

const ignore =
  skipUnless(isRoot(), "coturn lab tests", "network namespaces and nftables need root") ||
  skipUnless(hasCoturn(), "coturn lab tests", "no /usr/bin/turnserver (apt-get install coturn)");

/** A lab whose daemons know only coturn. */
async function withCoturnLab(
  natA: NatProfile,
  natB: NatProfile,
  fn: (lab: Lab, a: PunchdClient, b: PunchdClient) => Promise<void>,
): Promise<void> {
  await using lab = await Lab.create({ natA, natB });
  await using coturn = await startStunServer(lab);
  const args = coturn.addresses.flatMap((address) => ["--stun", address]);
  const daemons: RunningDaemon[] = [];
  const clients: PunchdClient[] = [];
  try {
    for (const host of [lab.hostA, lab.hostB]) {
      daemons.push(await startDaemon(args, undefined, ["ip", "netns", "exec", host.ns]));
    }
    for (const daemon of daemons) clients.push(await PunchdClient.connect(daemon.socketPath));
    const [a, b] = clients as [PunchdClient, PunchdClient];
    try {
      await fn(lab, a, b);
    } catch (error) {
      throw new Error(
        `${(error as Error).message}\n--- punchd A ---\n${daemons[0]?.logs()}\n--- punchd B ---\n${
          daemons[1]?.logs()
        }\n--- coturn ---\n${coturn.service.output().slice(-4000)}`,
        { cause: error },
      );
    }
  } finally {
    for (const client of clients) await client.close();
    for (const daemon of daemons) await daemon.stop();
  }
}

/** What `endpoint` must say behind each NAT profile (tcp, udp; RFC 5780 on udp). */
const EXPECTED: Partial<
  Record<NatProfile, { how: RegExp; nat: string; natIp: "public" | "host" }>
> = {
  preserving: { how: /^preserved$/, nat: "eim,apdf", natIp: "public" },
  symmetric: { how: /^random$/, nat: "apdm,apdf", natIp: "public" },
  shifting: { how: /^consistent$/, nat: "eim,apdf", natIp: "public" },
  sequential: { how: /^delta\+1$/, nat: "apdm,apdf", natIp: "public" },
  firewall: { how: /^preserved$/, nat: "eim,apdf", natIp: "host" },
  none: { how: /^preserved$/, nat: "eim,eif", natIp: "host" },
};

for (
  const [natA, natB] of [["preserving", "symmetric"], ["shifting", "sequential"], [
    "none",
    "firewall",
  ]] as const
) {
  Deno.test({
    name:
      `with coturn as the only STUN server, endpoint tells ${natA} and ${natB} NATs apart (udp with RFC 5780, tcp)`,
    ignore,
  }, async () => {
    await withCoturnLab(natA, natB, async (lab, a, b) => {
      const sides = [
        { client: a, nat: natA, host: lab.hostA.ip, public: lab.publicA, port: 21000 },
        { client: b, nat: natB, host: lab.hostB.ip, public: lab.publicB, port: 31000 },
      ];
      for (const side of sides) {
        const expected = EXPECTED[side.nat];
        if (expected === undefined) throw new TypeError(`no expectation for ${side.nat}`);
        const ip = expected.natIp === "public" ? side.public : side.host;
        for (const [i, protocol] of (["udp", "tcp"] as const).entries()) {
          const reply = await side.client.endpoint(`e${i}`, protocol, side.host, [side.port + i]);
          const what = `${side.nat} ${protocol}: ${JSON.stringify(reply)}`;
          assertEquals(reply.ip, ip, what);
          assertEquals(expected.how.test(reply.source), true, what);
          if (expected.how.source === "^preserved$") {
            assertEquals(reply.ports, [side.port + i], what);
          }
          // RFC 5780 tests run over UDP only (CHANGE-REQUEST is UDP-only).
          assertEquals(reply.nat, protocol === "udp" ? expected.nat : undefined, what);
        }
      }
    });
  });
}

Deno.test({
  name:
    "with coturn as the only STUN server, auto and auto-udp connect between two preserving NATs",
  ignore,
}, async () => {
  await withCoturnLab("preserving", "preserving", async (lab, a, b) => {
    for (const [n, choice] of (["auto", "auto-udp"] as const).entries()) {
      const outcome = await punch(a, b, lab, choice, n);
      try {
        assertEquals(outcome.endpointA.ip, lab.publicA);
        assertEquals(outcome.endpointB.ip, lab.publicB);
        if (choice === "auto") {
          await outcome.a.write(bytes("hello"));
          assertEquals(await readExactly(outcome.b, 5), "hello");
        } else {
          await outcome.a.write(bytes("hello"));
          const buf = new Uint8Array(16);
          const length = await outcome.b.read(buf, AbortSignal.timeout(5000));
          assertEquals(new TextDecoder().decode(buf.subarray(0, length)), "hello");
        }
      } finally {
        outcome.a.close();
        outcome.b.close();
      }
    }
  });
});
