import { assert, assertEquals } from "../assert.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { Logger } from "../../src/log.ts";
import { RendezvousServer } from "../../src/rendezvous/server.ts";
import { UdpNames } from "../../src/rendezvous/udp_names.ts";
import { UdpPeer } from "./peers.ts";

const quiet = new Logger("error", () => {});
const from = (port: number) => inetAddress("192.0.2.1", port);

function table(expiryMs = 10_000): UdpNames {
  return new UdpNames({ maxNames: 1_000_000, maxPerAddress: 1_000_000, expiryMs });
}

Deno.test("an expired UDP name is never returned, even before a sweep", () => {
  const names = table(1000);
  assertEquals(names.register("a", from(1), 0), null);
  assertEquals(names.get("a", 999)?.endpoint, from(1));
  assertEquals(names.get("a", 1000), undefined);
  assertEquals(names.size, 0);
});

Deno.test("a sweep deletes the names of the slots that ended, and only those", () => {
  const names = table(10_000);
  for (let i = 0; i < 1000; i++) names.register(`early${i}`, from(1000 + i), 0);
  for (let i = 0; i < 1000; i++) names.register(`late${i}`, from(3000 + i), 5000);
  assertEquals(names.slotCount, 2);
  names.sweep(12_000);
  assertEquals(names.size, 1000);
  assertEquals(names.slotCount, 1);
  assertEquals(names.get("late0", 12_000)?.endpoint, from(3000));
  names.sweep(16_000);
  assertEquals([names.size, names.slotCount], [0, 0]);
});

Deno.test("a keepalive moves a name to a later slot, so the sweep of its old slot keeps it", () => {
  const names = table(10_000);
  names.register("kept", from(1), 0);
  names.register("lost", from(2), 0);
  assert(names.renew("kept", 8000));
  names.sweep(11_000);
  assertEquals(names.get("kept", 11_000)?.endpoint, from(1));
  assertEquals(names.get("lost", 11_000), undefined);
  names.sweep(19_000);
  assertEquals(names.size, 0);
});

Deno.test("the per-address count of a UDP name is given back when it expires", () => {
  const names = new UdpNames({ maxNames: 10, maxPerAddress: 1, expiryMs: 1000 });
  assertEquals(names.register("a", from(1), 0), null);
  assertEquals(names.register("b", from(2), 0), "address-full");
  names.sweep(2000);
  assertEquals(names.register("b", from(2), 2000), null);
});

/** Milliseconds for `count` keepalive round trips. */
async function keepalives(peer: UdpPeer, server: RendezvousServer, count: number): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    assertEquals(await peer.ask(server.address, `keepalive|n${i % 10}`), `alive|n${i % 10}`);
  }
  return performance.now() - started;
}

Deno.test("with 30,000 UDP names held, a datagram costs what it costs with 10", async () => {
  const count = 30_000;
  const server = RendezvousServer.start({
    listen: inetAddress("127.0.0.1", 0),
    log: quiet,
    maxPeers: count,
    maxUdpNamesPerAddress: count,
  });
  const peer = new UdpPeer();
  try {
    // Fill the table, 200 registrations in flight at a time.
    const fill = async (from: number, to: number) => {
      for (let i = from; i < to; i += 200) {
        for (let j = i; j < Math.min(i + 200, to); j++) {
          await peer.send(server.address, `register|n${j}`);
        }
        for (let j = i; j < Math.min(i + 200, to); j++) await peer.receive();
      }
    };
    await fill(0, 10);
    await keepalives(peer, server, 500);
    const few = await keepalives(peer, server, 3000);
    await fill(10, count);
    assertEquals(server.udpNameCount, count);
    // A sweep of the whole table per datagram made this 3-4 times slower.
    const many = await keepalives(peer, server, 3000);
    assert(
      many < few * 2,
      `3000 datagrams: ${Math.round(few)} ms with 10 names, ${Math.round(many)} ms with ${count}`,
    );
  } finally {
    peer.close();
    await server.stop();
  }
});
