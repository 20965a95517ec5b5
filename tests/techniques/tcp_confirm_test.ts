import { createHmac } from "node:crypto";
import { assert, assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress, type SocketAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../../src/errors.ts";
import {
  assertAttemptToken,
  confirmation,
  CONFIRMATION_BYTES,
  confirmPeer,
  newAttemptToken,
} from "../../src/techniques/tcp_confirm.ts";

const TOKEN = "00112233445566778899aabbccddeeff";

/** A connected pair of loopback TCP sockets; both closed by the caller. */
async function pair(): Promise<[Socket, Socket]> {
  using listener = Socket.create("inet", "stream");
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen(1);
  const address = listener.localAddress() as SocketAddress & { family: "inet" };
  const client = Socket.create("inet", "stream");
  const [{ socket }] = await Promise.all([listener.accept(), client.connect(address)]);
  return [client, socket];
}

async function readAll(socket: Socket, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  for (let have = 0; have < length;) {
    const part = new Uint8Array(length - have);
    const n = await socket.read(part, AbortSignal.timeout(5000));
    assert(n > 0, "end of stream");
    out.set(part.subarray(0, n), have);
    have += n;
  }
  return out;
}

Deno.test("attempt tokens are 32 lowercase hex digits and differ each time", () => {
  const a = newAttemptToken();
  const b = newAttemptToken();
  assertAttemptToken(a);
  assert(a !== b);
  for (const bad of ["", TOKEN.slice(1), TOKEN.toUpperCase(), `${TOKEN}0`, `${TOKEN.slice(1)}g`]) {
    assertThrows(() => assertAttemptToken(bad), { name: "SyntaxError" }, bad);
  }
});

Deno.test("a confirmation is HMAC-SHA256 keyed by the token over technique and role, first 16 bytes", async () => {
  const expected = (role: string) =>
    new Uint8Array(
      createHmac("sha256", Buffer.from(TOKEN, "hex"))
        .update(`punchd-confirm-1|tcp-nutss|${role}`)
        .digest()
        .subarray(0, 16),
    );
  assertEquals(await confirmation(TOKEN, "tcp-nutss", "initiator"), expected("initiator"));
  assertEquals(await confirmation(TOKEN, "tcp-nutss", "responder"), expected("responder"));
  assertEquals(CONFIRMATION_BYTES, 16);
});

Deno.test("both ends confirm, and bytes after the confirmation stay for the application", async () => {
  const [a, b] = await pair();
  try {
    const signal = new AbortController().signal;
    await Promise.all([
      confirmPeer(a, { token: TOKEN, technique: "tcp-syni", role: "initiator", signal }),
      (async () => {
        await confirmPeer(b, { token: TOKEN, technique: "tcp-syni", role: "responder", signal });
        await b.write(new TextEncoder().encode("app data"));
      })(),
    ]);
    assertEquals(new TextDecoder().decode(await readAll(a, 8)), "app data");
  } finally {
    a.close();
    b.close();
  }
});

/** Each row: what a misbehaving peer does, and the error the confirming side must report. */
const PEERS: { name: string; peer: (s: Socket) => Promise<void>; error: RegExp }[] = [
  {
    name: "a confirmation keyed by another token",
    peer: async (s) => s.write(await confirmation(newAttemptToken(), "tcp-syni", "responder")),
    error: /^Cannot confirm the connection: the peer's confirmation is wrong$/,
  },
  {
    name: "our own confirmation reflected",
    peer: async (s) => s.write(await confirmation(TOKEN, "tcp-syni", "initiator")),
    error: /^Cannot confirm the connection: the peer's confirmation is wrong$/,
  },
  {
    name: "the right confirmation for another technique",
    peer: async (s) => s.write(await confirmation(TOKEN, "tcp-nutss", "responder")),
    error: /^Cannot confirm the connection: the peer's confirmation is wrong$/,
  },
  {
    name: "5 bytes, then the end of the stream",
    peer: async (s) => {
      await s.write(new Uint8Array(5));
      s.closeWrite();
    },
    error: /^Cannot confirm the connection: the peer closed the connection after 5 bytes$/,
  },
  {
    name: "silence",
    peer: () => Promise.resolve(),
    error: /^Cannot confirm the connection: no confirmation within 200 ms$/,
  },
];

for (const { name, peer, error } of PEERS) {
  Deno.test(`confirmation fails on ${name}`, async () => {
    const [a, b] = await pair();
    try {
      await peer(b);
      await assertRejects(
        () =>
          confirmPeer(a, {
            token: TOKEN,
            technique: "tcp-syni",
            role: "initiator",
            signal: new AbortController().signal,
            timeoutMs: 200,
          }),
        (e: Error) => e instanceof TechniqueError && error.test(e.message),
      );
    } finally {
      a.close();
      b.close();
    }
  });
}

Deno.test("an aborted attempt ends the confirmation with the attempt's reason", async () => {
  const [a, b] = await pair();
  try {
    const controller = new AbortController();
    const reason = new Error("attempt cancelled");
    setTimeout(() => controller.abort(reason), 20);
    await assertRejects(
      () =>
        confirmPeer(a, {
          token: TOKEN,
          technique: "tcp-nutss",
          role: "responder",
          signal: controller.signal,
        }),
      (e: Error) => e === reason,
    );
  } finally {
    a.close();
    b.close();
  }
});
