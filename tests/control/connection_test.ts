import { assertEquals } from "../assert.ts";
import { ClientConnection, type Line, LineSplitter } from "../../src/control/connection.ts";
import { TurnScheduler } from "../../src/control/turns.ts";
import { AF_UNIX, SOCK_STREAM } from "../../ffi/constants.ts";
import { Socket } from "../../ffi/socket.ts";
import { socketpair } from "../../ffi/syscalls.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const show = (lines: Line[]) =>
  lines.map((l) => l.kind === "line" ? new TextDecoder().decode(l.bytes) : "<too-long>");

Deno.test("LineSplitter joins lines split across reads", () => {
  const s = new LineSplitter(20);
  assertEquals(show(s.push(bytes("can"))), []);
  assertEquals(show(s.push(bytes("cel|a\ncancel|b\ncan"))), ["cancel|a", "cancel|b"]);
  assertEquals(show(s.push(bytes("cel|c\n"))), ["cancel|c"]);
});

Deno.test("LineSplitter reports an over-long line once and resynchronises at its newline", () => {
  const s = new LineSplitter(10);
  assertEquals(show(s.push(bytes("x".repeat(25)))), ["<too-long>"]);
  assertEquals(show(s.push(bytes("y".repeat(30)))), []);
  assertEquals(show(s.push(bytes("zz\nok|1\n"))), ["ok|1"]);
});

Deno.test("LineSplitter accepts a line of exactly the limit and refuses one byte more", () => {
  const s = new LineSplitter(5);
  assertEquals(show(s.push(bytes("12345\n123456\n"))), ["12345", "<too-long>"]);
});

/** A ClientConnection over a socketpair, and the client's end. */
function pair(
  number: number,
  turns: TurnScheduler,
): { connection: ClientConnection; peer: Socket } {
  const [a, b] = socketpair(AF_UNIX, SOCK_STREAM);
  return {
    connection: new ClientConnection(new Socket(a), number, { pid: 1, uid: 0, gid: 0 }, turns),
    peer: new Socket(b),
  };
}

/** Waits (without a clock of its own) until `condition` holds; 10 s at most. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Cannot see ${what} within 10 s`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

Deno.test("a client that pipelines requests cannot delay another client's: its line is handled on the next turn", async () => {
  const grants: (() => void)[] = [];
  const turns = new TurnScheduler({ defer: (grant) => grants.push(grant) });
  const flooder = pair(1, turns);
  const other = pair(2, turns);
  const handled: string[] = [];
  const consume = async (connection: ClientConnection) => {
    for await (const line of connection.lines()) {
      handled.push(line.kind === "line" ? new TextDecoder().decode(line.bytes) : "<too-long>");
    }
  };
  const consumers = [consume(flooder.connection), consume(other.connection)];
  try {
    // 300 pipelined requests, more than one read of the connection takes.
    await flooder.peer.write(bytes(Array.from({ length: 300 }, (_, i) => `f${i}\n`).join("")));
    for (let i = 0; i < 5; i++) {
      await until(() => grants.length > 0 && turns.waiting === 1, "the flooder's next line");
      grants.shift()?.();
      await until(() => handled.length === i + 1, "the flooder's line handled");
    }
    // Without turns the flooder's lines would all have been handled by now.
    assertEquals(handled, ["f0", "f1", "f2", "f3", "f4"]);
    await other.peer.write(bytes("status|x\n"));
    await until(() => turns.waiting === 2, "the other client's line");
    grants.shift()?.();
    await until(() => handled.length === 6, "a line handled");
    assertEquals(handled.at(-1), "status|x");
    // Then the flooder goes on; a second request of the other client again waits one turn.
    grants.shift()?.();
    await until(() => handled.length === 7, "a line handled");
    await other.peer.write(bytes("status|y\n"));
    await until(() => turns.waiting === 2, "the other client's second line");
    grants.shift()?.();
    await until(() => handled.length === 8, "a line handled");
    assertEquals(handled.slice(5), ["status|x", "f5", "status|y"]);
  } finally {
    flooder.peer.close();
    other.peer.close();
    flooder.connection.close();
    other.connection.close();
    await Promise.allSettled(consumers);
  }
});
