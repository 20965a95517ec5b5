/**
 * `report` in the NAT lab with coturn (two addresses, RFC 5780) as the only
 * STUN server: what a user of a network-check command would check, per NAT
 * profile (public address, UDP and TCP mapping, RFC 5780 behaviour, port
 * preservation, hairpinning, hops to leave the host's own NAT).
 *
 * @module
 */

import { assert, assertEquals } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import type { NatReport } from "../../src/control/status.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { hasCoturn, startStunServer } from "../lab/stun_server.ts";
import { type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ignore =
  skipUnless(isRoot(), "report lab tests", "network namespaces and nftables need root") ||
  skipUnless(hasCoturn(), "report lab tests", "no /usr/bin/turnserver (apt-get install coturn)");

/** Both daemons' reports, with coturn as the only STUN server. */
async function reports(natA: NatProfile, natB: NatProfile): Promise<[Lab, NatReport, NatReport]> {
  const lab = await Lab.create({ natA, natB });
  const daemons: RunningDaemon[] = [];
  const clients: PunchdClient[] = [];
  try {
    await using coturn = await startStunServer(lab);
    const args = coturn.addresses.flatMap((address) => ["--stun", address]);
    for (const host of [lab.hostA, lab.hostB]) {
      daemons.push(await startDaemon(args, undefined, ["ip", "netns", "exec", host.ns]));
    }
    for (const daemon of daemons) clients.push(await PunchdClient.connect(daemon.socketPath));
    const [a, b] = await Promise.all(clients.map((c) => c.report()));
    // A second ask within 30 s gets the same report (one run serves every client).
    const again = await clients[0]?.report();
    assertEquals(again, a);
    return [lab, a as NatReport, b as NatReport];
  } catch (error) {
    await lab.close();
    throw new Error(
      `${(error as Error).message}\n${daemons.map((d) => d.logs()).join("\n---\n")}`,
      { cause: error },
    );
  } finally {
    for (const client of clients) await client.close();
    for (const daemon of daemons) await daemon.stop();
  }
}

Deno.test({
  name:
    "report behind a port-preserving NAT and a random-mapping one: public address, mappings, RFC 5780, no hairpin, one hop",
  ignore,
}, async () => {
  const [lab, a, b] = await reports("preserving", "symmetric");
  await using _lab = lab;
  assertEquals(a.ipv4.public, lab.publicA);
  assertEquals(a.ipv4.mapping, "preserving");
  assertEquals(a.ipv4.tcpMapping, "preserving");
  assertEquals(a.ipv4.rfc5780, { mapping: "eim", filtering: "apdf" });
  assertEquals(a.ipv4.portPreservation, true);
  assertEquals(a.ipv4.hairpin, false);
  assertEquals(a.ipv4.hops, 1, JSON.stringify(a.ipv4));
  assertEquals(b.ipv4.public, lab.publicB);
  assertEquals(b.ipv4.mapping, "random");
  assertEquals(b.ipv4.rfc5780, { mapping: "apdm", filtering: "apdf" });
  assertEquals(b.ipv4.portPreservation, false);
  // No IPv6 server configured: said, not guessed.
  assertEquals(a.ipv6.public, null);
  assert(a.ipv6.notes.some((n) => n.includes("no IPv6 discovery server")));
  assert(a.ms > 0);
});

Deno.test({
  name: "report on a public host says it is not behind a NAT; behind a hairpinning NAT it says so",
  ignore,
}, async () => {
  {
    const [lab, a] = await reports("none", "preserving");
    await using _lab = lab;
    assertEquals(a.ipv4.public, lab.hostA.ip);
    assertEquals(a.ipv4.mapping, "none");
    assertEquals(a.ipv4.hairpin, null);
    assertEquals(a.ipv4.rfc5780, { mapping: "eim", filtering: "eif" });
  }
  {
    const [lab, a] = await reports("hairpin", "hairpin");
    await using _lab = lab;
    assertEquals(a.ipv4.mapping, "preserving");
    assertEquals(a.ipv4.hairpin, true, JSON.stringify(a.ipv4));
  }
});
