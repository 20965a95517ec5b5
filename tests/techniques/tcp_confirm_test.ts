import { createHmac } from "node:crypto";
import { assert, assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress, type SocketAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../../src/errors.ts";
import {
  assertAttemptToken,
  CONFIRM_MESSAGES,
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

Deno.test("each message is HMAC-SHA256 keyed by the token over technique and name, first 16 bytes", () => {
  const expected = (name: string) =>
    new Uint8Array(
      createHmac("sha256", Buffer.from(TOKEN, "hex"))
        .update(`punchd-confirm-1|tcp-nutss|${name}`)
        .digest()
        .subarray(0, 16),
    );
  assertEquals(CONFIRM_MESSAGES, ["initiator", "responder", "initiator-done"]);
  for (const name of CONFIRM_MESSAGES) {
    assertEquals(confirmation(TOKEN, "tcp-nutss", name), expected(name));
  }
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

/**
 * Each row: a misbehaving peer (what it writes, as the other role) and the
 * error the side under test must report.
 */
const PEERS: {
  name: string;
  role: "initiator" | "responder";
  peer: (s: Socket) => Promise<void>;
  error: RegExp;
}[] = [
  {
    name: "a responder keyed by another token",
    role: "initiator",
    peer: (s) => s.write(confirmation(newAttemptToken(), "tcp-syni", "responder")),
    error: /^Cannot confirm the connection: the peer's "responder" is wrong$/,
  },
  {
    name: "a responder reflecting the initiator's message",
    role: "initiator",
    peer: (s) => s.write(confirmation(TOKEN, "tcp-syni", "initiator")),
    error: /^Cannot confirm the connection: the peer's "responder" is wrong$/,
  },
  {
    name: "a responder with the right message of another technique",
    role: "initiator",
    peer: (s) => s.write(confirmation(TOKEN, "tcp-nutss", "responder")),
    error: /^Cannot confirm the connection: the peer's "responder" is wrong$/,
  },
  {
    name: "a responder writing 5 bytes, then ending the stream",
    role: "initiator",
    peer: async (s) => {
      await s.write(new Uint8Array(5));
      s.closeWrite();
    },
    error:
      /^Cannot confirm the connection: the peer closed the connection after 5 bytes of "responder"$/,
  },
  {
    name: "a silent responder",
    role: "initiator",
    peer: () => Promise.resolve(),
    error: /^Cannot confirm the connection: no confirmation within 200 ms$/,
  },
  {
    name: "an initiator replaying its first message as the last",
    role: "responder",
    peer: async (s) => {
      const first = confirmation(TOKEN, "tcp-syni", "initiator");
      await s.write(first);
      await s.write(first);
    },
    error: /^Cannot confirm the connection: the peer's "initiator-done" is wrong$/,
  },
  {
    name: "an initiator that stops after its first message",
    role: "responder",
    peer: (s) => s.write(confirmation(TOKEN, "tcp-syni", "initiator")),
    error: /^Cannot confirm the connection: no confirmation within 200 ms$/,
  },
];

for (const { name, role, peer, error } of PEERS) {
  Deno.test(`confirmation fails on ${name}`, async () => {
    const [a, b] = await pair();
    try {
      await peer(b);
      await assertRejects(
        () =>
          confirmPeer(a, {
            token: TOKEN,
            technique: "tcp-syni",
            role,
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

Deno.test("the responder writes nothing until the initiator's confirmation checks out", async () => {
  const [a, b] = await pair();
  try {
    await a.write(confirmation(TOKEN, "tcp-nutss", "responder")); // not the initiator's
    await assertRejects(
      () =>
        confirmPeer(b, {
          token: TOKEN,
          technique: "tcp-nutss",
          role: "responder",
          signal: new AbortController().signal,
        }),
      (e: Error) => e instanceof TechniqueError && /"initiator" is wrong/.test(e.message),
    );
    b.close();
    const buf = new Uint8Array(16);
    assertEquals(await a.read(buf, AbortSignal.timeout(5000)), 0);
  } finally {
    a.close();
    b.close();
  }
});
