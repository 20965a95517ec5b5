import { assertEquals } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import type { RendezvousServer } from "../../src/rendezvous/server.ts";
import { withServer } from "./peers.ts";

/** A UDP peer on loopback. */
class UdpPeer {
  readonly socket = Socket.create("inet", "datagram");
  constructor() {
    this.socket.bind(inetAddress("127.0.0.1", 0));
  }
  get port(): number {
    return (this.socket.localAddress() as { port: number }).port;
  }
  async send(server: RendezvousServer, text: string): Promise<void> {
    await this.socket.sendTo(new TextEncoder().encode(text), server.address);
  }
  async receive(): Promise<string> {
    const buf = new Uint8Array(600);
    const { length } = await this.socket.receiveFrom(buf, AbortSignal.timeout(3000));
    return new TextDecoder().decode(buf.subarray(0, length));
  }
  async ask(server: RendezvousServer, text: string): Promise<string> {
    await this.send(server, text);
    return await this.receive();
  }
  close(): void {
    this.socket.close();
  }
}

Deno.test("a UDP peer registers a name with its observed endpoint; connect tells both sides", async () => {
  await withServer({ maxPeers: 8 }, async (server) => {
    const host = new UdpPeer();
    const guest = new UdpPeer();
    try {
      assertEquals(
        await host.ask(server, "register|alice"),
        `registered|alice|127.0.0.1|${host.port}`,
      );
      assertEquals(await guest.ask(server, "connect|alice"), `peer|alice|127.0.0.1|${host.port}`);
      assertEquals(await host.receive(), `peer|-|127.0.0.1|${guest.port}`);
      assertEquals(await guest.ask(server, "connect|nobody"), "unknown|nobody");
      assertEquals(await guest.ask(server, "observe"), `observed|127.0.0.1|${guest.port}`);
    } finally {
      host.close();
      guest.close();
    }
  });
});

Deno.test("a session: one registration, five clients, every pair learns the other's endpoint", async () => {
  await withServer({ maxPeers: 8 }, async (server) => {
    const host = new UdpPeer();
    const clients = [0, 1, 2, 3, 4].map(() => new UdpPeer());
    try {
      await host.ask(server, "register|session-42");
      for (const client of clients) {
        assertEquals(
          await client.ask(server, "connect|session-42"),
          `peer|session-42|127.0.0.1|${host.port}`,
        );
        assertEquals(await host.receive(), `peer|-|127.0.0.1|${client.port}`);
      }
    } finally {
      host.close();
      for (const c of clients) c.close();
    }
  });
});

Deno.test("a UDP name belongs to its endpoint until it expires; keepalive keeps it", async () => {
  await withServer({ maxPeers: 8, udpExpiryMs: 250 }, async (server) => {
    const owner = new UdpPeer();
    const thief = new UdpPeer();
    try {
      await owner.ask(server, "register|bob");
      assertEquals(await thief.ask(server, "register|bob"), "error|register|name is taken");
      assertEquals(
        await thief.ask(server, "keepalive|bob"),
        "error|keepalive|unknown name (expired or not yours)",
      );
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 100));
        assertEquals(await owner.ask(server, "keepalive|bob"), "alive|bob");
      }
      // Kept alive for 400 ms with a 250 ms expiry: still there. Then silence.
      assertEquals(await thief.ask(server, "connect|bob"), `peer|bob|127.0.0.1|${owner.port}`);
      await owner.receive();
      await new Promise((r) => setTimeout(r, 400));
      assertEquals(await thief.ask(server, "connect|bob"), "unknown|bob");
      assertEquals(
        await thief.ask(server, "register|bob"),
        `registered|bob|127.0.0.1|${thief.port}`,
      );
    } finally {
      owner.close();
      thief.close();
    }
  });
});

Deno.test("bad UDP requests get a clear error", async () => {
  await withServer({ maxPeers: 8 }, async (server) => {
    const peer = new UdpPeer();
    try {
      assertEquals(await peer.ask(server, "hello"), 'error|-|unknown command "hello"');
      assertEquals(
        await peer.ask(server, "register|a b"),
        "error|register|bad name (1-128 of A-Z a-z 0-9 . _ : @ + = / -)",
      );
      assertEquals(
        await peer.ask(server, "connect|x|y"),
        "error|connect|bad name (1-128 of A-Z a-z 0-9 . _ : @ + = / -)",
      );
      assertEquals(
        await peer.ask(server, "keepalive|"),
        "error|keepalive|bad name (1-128 of A-Z a-z 0-9 . _ : @ + = / -)",
      );
    } finally {
      peer.close();
    }
  });
});
