/**
 * `endpoint` in the NAT lab: with the lab's two probe ports, a random-mapping
 * NAT must be called `random` every time (two different ports are no step),
 * and a port-preserving NAT still `preserved`.
 *
 * @module
 */

import { assertEquals } from "../assert.ts";
import { withLab } from "../lab/punch.ts";
import { RENDEZVOUS_PORT } from "../lab/services.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const needsRoot = skipUnless(
  isRoot(),
  "endpoint lab tests",
  "network namespaces and nftables need root",
);

const REQUESTS = 30;

Deno.test({
  name:
    `endpoint calls a random-mapping NAT random in ${REQUESTS} of ${REQUESTS} requests (tcp and udp)`,
  ignore: needsRoot,
}, async () => {
  await withLab("symmetric", "preserving", [], async (lab, clientA) => {
    for (const protocol of ["tcp", "udp"] as const) {
      const hows = new Map<string, number>();
      for (let i = 0; i < REQUESTS; i++) {
        const reply = await clientA.endpoint(`r${protocol}${i}`, protocol, lab.hostA.ip, [
          21000 + i,
        ]);
        assertEquals(reply.ip, lab.publicA);
        assertEquals(reply.ports.length, 1);
        hows.set(reply.source, (hows.get(reply.source) ?? 0) + 1);
      }
      assertEquals(Object.fromEntries(hows), { random: REQUESTS }, protocol);
      const two = await clientA.endpoint(`r${protocol}2`, protocol, lab.hostA.ip, [22000, 22001]);
      assertEquals([two.source, two.ports.length], ["random", 2]);
    }
  });
});

Deno.test({
  name: "endpoint still calls a port-preserving NAT preserved (tcp and udp, one and two ports)",
  ignore: needsRoot,
}, async () => {
  await withLab("symmetric", "preserving", [], async (lab, _clientA, clientB) => {
    for (const protocol of ["tcp", "udp"] as const) {
      for (let i = 0; i < 10; i++) {
        const reply = await clientB.endpoint(`p${protocol}${i}`, protocol, lab.hostB.ip, [
          31000 + i,
        ]);
        assertEquals(reply, { ip: lab.publicB, ports: [31000 + i], source: "preserved" });
      }
      const two = await clientB.endpoint(`p${protocol}2`, protocol, lab.hostB.ip, [32000, 32001]);
      assertEquals(two, { ip: lab.publicB, ports: [32000, 32001], source: "preserved" });
    }
  });
});

const OBSERVE_UDP = new URL("../fixtures/observe_udp.ts", import.meta.url).pathname;

Deno.test({
  name:
    "endpoint predicts a sequential NAT (delta+1: the next UDP flow gets the first port listed)",
  ignore: needsRoot,
}, async () => {
  await withLab("sequential", "shifting", [], async (lab, clientA) => {
    for (const [i, protocol] of (["tcp", "udp", "tcp", "udp"] as const).entries()) {
      const port = 21000 + i;
      const reply = await clientA.endpoint(`s${i}`, protocol, lab.hostA.ip, [port]);
      assertEquals(reply.ip, lab.publicA);
      assertEquals(reply.source, "delta+1", `${protocol} ${JSON.stringify(reply)}`);
      assertEquals(reply.ports.length, 2);
      if (protocol === "udp") {
        // A new destination from the same local port: the rendezvous server's main port (UDP observe).
        // No version check: its DNS query would take a port of the sequential NAT first.
        const observed = await lab.exec(lab.hostA.ns, [
          "env",
          "DENO_NO_UPDATE_CHECK=1",
          Deno.execPath(),
          "run",
          "--allow-ffi",
          "--allow-read",
          OBSERVE_UDP,
          `${lab.hostA.ip}:${port}`,
          `${lab.serverIp}:${RENDEZVOUS_PORT}`,
        ]);
        assertEquals(Number(observed.trim()), reply.ports[0]);
      }
      const two = await clientA.endpoint(`s${i}2`, protocol, lab.hostA.ip, [22000 + i, 23000 + i]);
      assertEquals([two.source, two.ports.length], ["delta+1", 2]);
    }
  });
});

Deno.test({
  name: "endpoint calls an endpoint-independent NAT without port preservation consistent",
  ignore: needsRoot,
}, async () => {
  await withLab("sequential", "shifting", [], async (lab, _clientA, clientB) => {
    for (const protocol of ["tcp", "udp"] as const) {
      const reply = await clientB.endpoint(`c${protocol}`, protocol, lab.hostB.ip, [31000]);
      // The "shifting" profile maps each local port to port XOR 0x1000.
      assertEquals(reply, { ip: lab.publicB, ports: [31000 ^ 0x1000], source: "consistent" });
    }
  });
});
