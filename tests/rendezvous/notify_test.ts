import { assert, assertEquals } from "../assert.ts";
import { SO_RCVBUF, SOL_SOCKET } from "../../ffi/constants.ts";
import type { RendezvousServer } from "../../src/rendezvous/server.ts";
import { readLines } from "../helpers/daemon.ts";
import { LinePeer, withServer } from "./peers.ts";

const PAYLOAD = "x".repeat(900);

/** A registered victim that reads nothing, with a small receive window. */
async function victimOf(server: RendezvousServer): Promise<LinePeer> {
  const victim = await LinePeer.connect(server.address);
  victim.socket.setOption(SOL_SOCKET, SO_RCVBUF, 4096);
  assertEquals(await victim.ask("register|victim"), ["ok|register|victim"]);
  return victim;
}

/** Pipelines `count` notifies of 900 bytes to the victim and reads every reply until the end. */
async function flood(attacker: LinePeer, count: number): Promise<string[]> {
  const lines = new TextEncoder().encode(`notify|victim|${PAYLOAD}\n`.repeat(count));
  const writing = attacker.socket.write(lines, AbortSignal.timeout(8000)).catch(() => {});
  const replies = await attacker.readToEnd(8000);
  await writing;
  return replies.split("\n").filter((l) => l !== "");
}

/** True while `victim` is registered: someone else cannot take the ID. */
async function stillRegistered(server: RendezvousServer): Promise<boolean> {
  const probe = await LinePeer.connect(server.address, "127.0.0.9");
  try {
    const [reply] = await probe.ask("register|victim");
    return reply === "error|register|peer ID is taken";
  } finally {
    probe.close();
  }
}

Deno.test("a notify flood gets the sender rate-limited, then disconnected; the receiver keeps its ID", async () => {
  await withServer({ notifyRate: 20, notifyBurst: 40 }, async (server) => {
    const victim = await victimOf(server);
    const attacker = await LinePeer.connect(server.address);
    try {
      assertEquals(await attacker.ask("register|attacker"), ["ok|register|attacker"]);
      // 9 MB of notifications: more than the kernel buffers and the queue hold.
      const replies = await flood(attacker, 10_000);
      const ok = replies.filter((r) => r === "ok|notify|victim").length;
      assert(ok >= 40 && ok < 60, `${ok} notifications went through`);
      assert(replies.includes("error|notify|rate limit exceeded"));
      assertEquals(replies.at(-1), "error|notify|rate limit exceeded: disconnected");
      assert(await stillRegistered(server));
      // The victim reads what got through and carries on.
      const notes = (await victim.ask("ping", ok + 1)).filter((l) => l.startsWith("notify|"));
      assertEquals(notes.length, ok);
      assertEquals(notes[0], `notify|attacker|${PAYLOAD}`);
    } finally {
      victim.close();
      attacker.close();
    }
  });
});

Deno.test("notifications to a receiver that does not read are refused to the sender, and the receiver stays", async () => {
  await withServer(
    { notifyRate: 10_000, notifyBurst: 10_000, maxQueuedBytes: 8192 },
    async (server) => {
      const victim = await victimOf(server);
      const attacker = await LinePeer.connect(server.address);
      try {
        assertEquals(await attacker.ask("register|attacker"), ["ok|register|attacker"]);
        // 7 MB of notifications: more than the kernel buffers and the queue hold.
        const count = 8000;
        const lines = new TextEncoder().encode(`notify|victim|${PAYLOAD}\n`.repeat(count));
        const writing = attacker.socket.write(lines, AbortSignal.timeout(8000));
        const replies = await readLines(attacker.socket, count, 8000);
        await writing;
        const refused = replies.filter((r) =>
          r === "error|notify|peer is not reading; try again later"
        ).length;
        assert(refused > 0 && refused < count, `${refused} of ${count} refused`);
        assertEquals(
          replies.length - refused,
          replies.filter((r) => r === "ok|notify|victim").length,
        );
        assert(await stillRegistered(server));
        const [first] = await readLines(victim.socket, 1, 5000);
        assertEquals(first, `notify|attacker|${PAYLOAD}`);
      } finally {
        victim.close();
        attacker.close();
      }
    },
  );
});
