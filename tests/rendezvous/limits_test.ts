import { assert, assertEquals, assertThrows } from "../assert.ts";
import { inetAddress, type SocketAddress } from "../../ffi/structs.ts";
import { AddressCounter, addressKey, TokenBucket } from "../../src/rendezvous/limits.ts";
import { LinePeer, UdpPeer, withServer } from "./peers.ts";

Deno.test("one address cannot hold more connections than its limit; another address still can", async () => {
  await withServer({ maxConnectionsPerAddress: 3 }, async (server) => {
    const mine = await Promise.all([1, 2, 3].map(() => LinePeer.connect(server.address)));
    const extra = await LinePeer.connect(server.address);
    const other = await LinePeer.connect(server.address, "127.0.0.2");
    try {
      assertEquals(await extra.readToEnd(), "error|-|too many connections from your address\n");
      assertEquals(await other.ask("ping"), ["pong"]);
      for (const peer of mine) assertEquals(await peer.ask("ping"), ["pong"]);
      assertEquals(server.connectionCount, 4);
    } finally {
      for (const peer of [...mine, extra, other]) peer.close();
    }
  });
});

Deno.test("the total number of connections is limited", async () => {
  await withServer({ maxConnections: 2 }, async (server) => {
    const peers = await Promise.all([1, 2].map(() => LinePeer.connect(server.address)));
    const extra = await LinePeer.connect(server.address, "127.0.0.3");
    try {
      for (const peer of peers) assertEquals(await peer.ask("ping"), ["pong"]);
      assertEquals(await extra.readToEnd(), "error|-|too many connections\n");
    } finally {
      for (const peer of [...peers, extra]) peer.close();
    }
  });
});

Deno.test("one address cannot register more IDs than its limit; another address still can", async () => {
  await withServer({ maxIdsPerAddress: 2 }, async (server) => {
    const mine = await Promise.all([0, 1, 2].map(() => LinePeer.connect(server.address)));
    const other = await LinePeer.connect(server.address, "127.0.0.2");
    try {
      assertEquals(await mine[0]!.ask("register|a0"), ["ok|register|a0"]);
      assertEquals(await mine[1]!.ask("register|a1"), ["ok|register|a1"]);
      assertEquals(await mine[2]!.ask("register|a2"), [
        "error|register|too many IDs from your address",
      ]);
      assertEquals(await other.ask("register|b0"), ["ok|register|b0"]);
      // A disconnect gives the address its registration back.
      mine[0]!.close();
      for (let i = 0; i < 100 && server.peerCount > 2; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assertEquals(await mine[2]!.ask("register|a2"), ["ok|register|a2"]);
    } finally {
      for (const peer of [...mine, other]) peer.close();
    }
  });
});

Deno.test("one UDP endpoint registering 999 names locks nobody else out", async () => {
  await withServer({ maxPeers: 100, maxUdpNamesPerAddress: 4 }, async (server) => {
    const attacker = new UdpPeer();
    const victim = new UdpPeer("127.0.0.2");
    try {
      let registered = 0;
      for (let i = 0; i < 999; i++) {
        const reply = await attacker.ask(server.address, `register|name${i}`);
        if (reply.startsWith("registered|")) registered++;
        else assertEquals(reply, "error|register|too many names from your address");
      }
      assertEquals(registered, 4);
      assertEquals(server.udpNameCount, 4);
      assertEquals(
        await victim.ask(server.address, "register|session"),
        `registered|session|127.0.0.2|${victim.port}`,
      );
    } finally {
      attacker.close();
      victim.close();
    }
  });
});

Deno.test("a connection that never registers is closed after the register timeout", async () => {
  await withServer({ registerTimeoutMs: 300 }, async (server) => {
    const idle = await LinePeer.connect(server.address);
    const registered = await LinePeer.connect(server.address);
    try {
      assertEquals(await registered.ask("register|kept"), ["ok|register|kept"]);
      // Requests other than register do not count.
      assertEquals(await idle.ask("ping"), ["pong"]);
      const started = Date.now();
      assertEquals(await idle.readToEnd(3000), "error|-|not registered within 0.3 s\n");
      assert(Date.now() - started < 2000);
      idle.close();
      assertEquals(await registered.ask("ping"), ["pong"]);
      for (let i = 0; i < 100 && server.connectionCount > 1; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assertEquals(server.connectionCount, 1);
    } finally {
      idle.close();
      registered.close();
    }
  });
});

const KEYS: [SocketAddress, string][] = [
  [inetAddress("192.0.2.7", 1), "192.0.2.7"],
  [
    { family: "inet6", address: "2001:db8:1:2:3:4:5:6", port: 1 },
    "2001:db8:1:2::/64",
  ],
  [
    { family: "inet6", address: "2001:db8::1", port: 1 },
    "2001:db8:0:0::/64",
  ],
  [{ family: "inet6", address: "::ffff:192.0.2.9", port: 1 }, "192.0.2.9"],
];

Deno.test("per-address limits count an IPv4 address, or an IPv6 /64", () => {
  for (const [address, key] of KEYS) assertEquals(addressKey(address), key);
});

Deno.test("an address counter caps each key and forgets keys that hold nothing", () => {
  const counter = new AddressCounter(2);
  assert(counter.acquire("a"));
  assert(counter.acquire("a"));
  assert(!counter.acquire("a"));
  assert(counter.acquire("b"));
  counter.release("a");
  counter.release("a");
  counter.release("b");
  assertEquals(counter.size, 0);
  assertThrows(() => new AddressCounter(0), RangeError);
});

Deno.test("a token bucket allows its burst, then its rate", () => {
  let now = 0;
  const bucket = new TokenBucket(10, 3, () => now);
  assertEquals([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
    true,
    true,
    true,
    false,
  ]);
  now += 100;
  assertEquals([bucket.take(), bucket.take()], [true, false]);
  now += 10_000;
  assertEquals([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
    true,
    true,
    true,
    false,
  ]);
});

Deno.test("connect floods cannot aim the server's datagrams at a registered endpoint", async () => {
  await withServer({ udpConnectRate: 20 }, async (server) => {
    const host = new UdpPeer();
    const attacker = new UdpPeer("127.0.0.2");
    try {
      await host.ask(server.address, "register|target");
      const started = Date.now();
      const replies: string[] = [];
      for (let i = 0; i < 200; i++) {
        replies.push(await attacker.ask(server.address, "connect|target"));
      }
      const allowed = 40 + Math.ceil(((Date.now() - started) / 1000) * 20);
      const sent = replies.filter((r) => r.startsWith("peer|target|")).length;
      assert(sent >= 40 && sent <= allowed, `${sent} connects went through`);
      assertEquals(
        replies.length - sent,
        replies.filter((r) => r === "error|connect|rate limit exceeded").length,
      );
      // The host got one datagram per connect that went through, no more.
      let received = 0;
      while (await host.receive(300).then(() => true, () => false)) received++;
      assertEquals(received, sent);
    } finally {
      host.close();
      attacker.close();
    }
  });
});
