/**
 * Hop discovery in the NAT lab: what it finds behind one and two NATs, and
 * that no probe ever reaches the peer's NAT.
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import type { HopDiscovery } from "../../src/discovery/hop_probe.ts";
import { Lab, type NatProfile } from "../lab/lab.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "hop discovery lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

const CLI = new URL("./probe_hops_cli.ts", import.meta.url).pathname;

/** Probes from host A to B's public address inside the lab. */
async function probeFromA(lab: Lab): Promise<HopDiscovery> {
  const out = await lab.exec(lab.hostA.ns, [
    Deno.execPath(),
    "run",
    "-A",
    CLI,
    lab.hostA.ip,
    lab.publicB,
  ]);
  return JSON.parse(out) as HopDiscovery;
}

/** Counts UDP probes (ports 33434-33533) that reach router B, the peer's NAT. */
async function countProbesAtPeerNat(lab: Lab): Promise<() => Promise<number>> {
  await lab.exec(
    lab.routerB.ns,
    ["nft", "-f", "-"],
    `table ip hopcount {
  chain input {
    type filter hook prerouting priority -300; policy accept;
    udp dport 33434-33533 counter
  }
}
`,
  );
  return async () => {
    const listing = await lab.exec(lab.routerB.ns, ["nft", "list", "table", "ip", "hopcount"]);
    return Number(listing.match(/packets (\d+)/)?.[1] ?? NaN);
  };
}

async function withLab(natA: NatProfile, fn: (lab: Lab) => Promise<void>): Promise<void> {
  await using lab = await Lab.create({ natA, natB: "preserving" });
  await fn(lab);
}

Deno.test({
  name: "behind a home NAT behind a carrier-grade NAT, the first router outside is hop 3",
  ignore: needsRoot,
}, async () => {
  await withLab("double", async (lab) => {
    const atPeer = await countProbesAtPeerNat(lab);
    const result = await probeFromA(lab);
    assertEquals(result.firstOutside, 3);
    assertEquals(result.probes, 3);
    assertEquals(result.hops.map((h) => [h.ttl, h.address, h.side]), [
      [1, "10.0.1.1", "inside"],
      [2, "100.64.1.1", "inside"],
      [3, "172.16.1.1", "outside"],
    ]);
    assertEquals(await atPeer(), 0);
  });
});

Deno.test({
  name: "behind one NAT, the first router outside is hop 2",
  ignore: needsRoot,
}, async () => {
  await withLab("preserving", async (lab) => {
    const atPeer = await countProbesAtPeerNat(lab);
    const result = await probeFromA(lab);
    assertEquals(result.firstOutside, 2);
    assertEquals(result.hops.map((h) => [h.address, h.side]), [
      ["10.0.1.1", "inside"],
      ["172.16.1.1", "outside"],
    ]);
    assertEquals(await atPeer(), 0);
  });
});

Deno.test({
  name: "a silent carrier-grade NAT ends probing at its hop: nothing goes further, two tries there",
  ignore: needsRoot,
}, async () => {
  await withLab("double", async (lab) => {
    // The carrier NAT sends no time-exceeded.
    await lab.exec(
      lab.carrierA.ns,
      ["nft", "-f", "-"],
      `table ip silent {
  chain output {
    type filter hook output priority 0; policy accept;
    icmp type time-exceeded drop
  }
}
`,
    );
    const atPeer = await countProbesAtPeerNat(lab);
    const result = await probeFromA(lab);
    assertEquals(result.firstOutside, 2);
    assertEquals(result.probes, 3);
    assertEquals(result.hops.map((h) => [h.ttl, h.side]), [[1, "inside"], [2, "silent"]]);
    assertEquals(await atPeer(), 0);
  });
});

Deno.test({
  name: "a host on the peer's own network block is not probed at all",
  ignore: needsRoot,
}, async () => {
  await withLab("none", async (lab) => {
    // From a public host in 10/8 to B's LAN host in 10/8: addresses cannot tell inside from outside.
    const out = await lab.exec(lab.hostA.ns, [
      Deno.execPath(),
      "run",
      "-A",
      CLI,
      lab.hostA.ip,
      "10.0.2.2",
    ]);
    const result = JSON.parse(out) as HopDiscovery;
    assertEquals([result.firstOutside, result.probes], [null, 0]);
  });
});
