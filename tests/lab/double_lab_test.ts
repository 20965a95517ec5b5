/**
 * The lab's "double" profile: its carrier-grade NAT namespace, the public
 * address it holds, and its clean-up.
 *
 * @module
 */

import { assert, assertEquals, assertRejects } from "../assert.ts";
import { Lab } from "./lab.ts";
import { runCommand } from "../../src/process.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = "double NAT lab tests";
const needsRoot = skipUnless(isRoot(), ROOT, "network namespaces and nftables need root");

async function namespaceExists(name: string): Promise<boolean> {
  const list = await runCommand("ip", ["netns", "list"]);
  return list.stdout.split("\n").some((line) => line.split(" ")[0] === name);
}

Deno.test({
  name:
    "a double NAT's carrier NAT holds the public address, the home NAT's WAN is in 100.64.0.0/10, and close() removes both",
  ignore: needsRoot,
}, async () => {
  const lab = await Lab.create({ natA: "double", natB: "double" });
  try {
    assert(lab.namespaces.includes(lab.carrierA.ns) && lab.namespaces.includes(lab.carrierB.ns));
    const addresses = async (ns: string) =>
      (await lab.exec(ns, ["ip", "-4", "-o", "addr", "show"])).split("\n")
        .map((l) => l.match(/inet (\S+)/)?.[1]).filter((a) => a !== undefined).sort();
    assertEquals(await addresses(lab.carrierA.ns), [
      "100.64.1.1/24",
      "127.0.0.1/8",
      "172.16.1.2/24",
    ]);
    assertEquals(await addresses(lab.routerA.ns), ["10.0.1.1/24", "100.64.1.2/24", "127.0.0.1/8"]);
    assertEquals(await addresses(lab.carrierB.ns), [
      "100.64.2.1/24",
      "127.0.0.1/8",
      "172.16.2.2/24",
    ]);
    // Both NATs masquerade: the server sees host A as the carrier NAT's public address.
    const server = lab.spawn(lab.internet.ns, [
      "python3",
      "-c",
      "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('172.16.0.1', 7777)); s.listen(); print('ready', flush=True); c,a=s.accept(); c.sendall(a[0].encode()); c.close()",
    ]);
    try {
      const reader = server.stdout.getReader();
      await reader.read(); // "ready"
      reader.releaseLock();
      const seen = await lab.exec(lab.hostA.ns, [
        "python3",
        "-c",
        "import socket; s=socket.create_connection(('172.16.0.1', 7777), timeout=5); print(s.recv(64).decode())",
      ]);
      assertEquals(seen.trim(), lab.publicA);
    } finally {
      // The server exits after one connection; it is killed only when it is still waiting.
      try {
        server.kill();
      } catch {
        // Already exited.
      }
      await server.output();
    }
  } finally {
    await lab.close();
  }
  assertEquals(await namespaceExists(lab.carrierA.ns), false);
  assertEquals(await namespaceExists(lab.carrierB.ns), false);
  assertEquals(await namespaceExists(lab.hostA.ns), false);
});

Deno.test({
  name: "a double NAT with IPv6 is refused clearly and leaves no namespace",
  ignore: needsRoot,
}, async () => {
  const before = (await runCommand("ip", ["netns", "list"])).stdout;
  await assertRejects(() => Lab.create({ natA: "preserving", natB: "double", ipv6: true }), {
    name: "RangeError",
    message: 'Cannot build NAT profile "double" with ipv6: carrier-grade NAT is IPv4-only here',
  });
  const after = (await runCommand("ip", ["netns", "list"])).stdout;
  const mine = (text: string) =>
    text.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) =>
      n.startsWith(`pdlab${Deno.pid}x`)
    );
  assertEquals(mine(after), mine(before));
});
