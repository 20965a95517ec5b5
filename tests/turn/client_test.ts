import { assert, assertEquals, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  decode,
  decodeText,
  decodeUint32,
  encode,
  encodeErrorCode,
  encodeText,
  encodeUint32,
  encodeXorAddress,
  longTermKey,
  METHOD,
  type StunAttribute,
  type StunMessage,
  verifyIntegrity,
} from "../../src/stun/message.ts";
import { credentialsFor, TurnControl, TurnError } from "../../src/turn/client.ts";
import { procTcpState, TurnKeeper } from "../../src/turn/keeper.ts";
import { Logger } from "../../src/log.ts";

const REALM = "test.realm";
const USER = "alice";
const PASSWORD = "pw";
const RELAYED = inetAddress("192.0.2.9", 50000);

/** What a fake TURN server does with one request; null: says nothing more (and closes). */
type Script = (
  request: StunMessage,
  raw: Uint8Array,
  n: number,
) => Uint8Array | "close" | "garbage";

function answer(
  request: StunMessage,
  klass: "success" | "error",
  attributes: StunAttribute[],
  key?: Uint8Array,
): Uint8Array {
  return encode(
    { method: request.method, class: klass, transactionId: request.transactionId, attributes },
    key === undefined ? {} : { integrityKey: key },
  );
}

const error = (request: StunMessage, code: number, extra: StunAttribute[] = []) =>
  answer(request, "error", [
    { type: ATTR.ERROR_CODE, value: encodeErrorCode(code, `error ${code}`) },
    ...extra,
  ]);

const challenge = (nonce: string) => [
  { type: ATTR.REALM, value: encodeText(REALM) },
  { type: ATTR.NONCE, value: encodeText(nonce) },
];

const KEY = longTermKey(USER, REALM, PASSWORD);

/** A correct server: 401 with a challenge, then checks the integrity and allocates. */
const honest: Script = (request, raw) => {
  if (attribute(request, ATTR.MESSAGE_INTEGRITY) === undefined) {
    return error(request, 401, challenge("n1"));
  }
  if (!verifyIntegrity(raw, KEY)) return error(request, 401, challenge("n1"));
  return answer(request, "success", [
    { type: ATTR.XOR_RELAYED_ADDRESS, value: encodeXorAddress(RELAYED, request.transactionId) },
    { type: ATTR.LIFETIME, value: encodeUint32(600) },
  ], KEY);
};

async function withFakeServer(
  script: Script,
  body: (server: InetAddress) => Promise<void>,
): Promise<void> {
  const listener = Socket.create("inet", "stream", { reuseAddress: true });
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen();
  const server = listener.localAddress() as InetAddress;
  const stop = new AbortController();
  const loop = (async () => {
    try {
      for (;;) {
        const { socket } = await listener.accept(stop.signal);
        void (async () => {
          using conn = socket;
          const buf = new Uint8Array(4096);
          let length = 0;
          let n = 0;
          try {
            for (;;) {
              const got = await conn.read(buf.subarray(length), stop.signal);
              if (got === 0) return;
              length += got;
              while (length >= 20 && length >= 20 + ((buf[2] ?? 0) << 8 | (buf[3] ?? 0))) {
                const total = 20 + ((buf[2] ?? 0) << 8 | (buf[3] ?? 0));
                const raw = buf.slice(0, total);
                buf.copyWithin(0, total, length);
                length -= total;
                const reply = script(decode(raw).message, raw, n++);
                if (reply === "close") return;
                const out = reply === "garbage"
                  ? new TextEncoder().encode("HTTP/1.1 400 Bad\r\n\r\n")
                  : reply;
                await conn.write(new Uint8Array(out), stop.signal);
              }
            }
          } catch {
            // Stopped.
          }
        })();
      }
    } catch {
      // Stopped.
    }
  })();
  try {
    await body(server);
  } finally {
    stop.abort();
    await loop;
    listener.close();
  }
}

const creds = { user: USER, password: PASSWORD };
const signal = () => AbortSignal.timeout(3000);

Deno.test("Allocate answers the 401 challenge with long-term credentials and reads the relayed address", async () => {
  await withFakeServer(honest, async (server) => {
    using control = await TurnControl.allocate(server, creds, signal());
    assertEquals(control.relayed, RELAYED);
    assertEquals(control.lifetime, 600);
  });
});

const FAILURES: [string, Script, RegExp][] = [
  [
    "wrong credentials (401 after they were sent)",
    (request) => error(request, 401, challenge("n1")),
    /wrong credentials \(401\)/,
  ],
  [
    "a 401 without REALM or NONCE",
    (request) => error(request, 401),
    /challenge has no REALM or NONCE/,
  ],
  [
    "a quota error (486)",
    (request, raw) =>
      attribute(request, ATTR.MESSAGE_INTEGRITY) === undefined
        ? honest(request, raw, 0)
        : error(request, 486),
    /TURN Allocate refused: 486/,
  ],
  [
    "a server that asks for no credentials",
    (request) =>
      answer(request, "success", [{
        type: ATTR.XOR_RELAYED_ADDRESS,
        value: encodeXorAddress(RELAYED, request.transactionId),
      }]),
    /asked for no credentials/,
  ],
  ["garbage", () => "garbage", /not STUN/],
  ["a server that closes", () => "close", /closed the connection/],
];

for (const [what, script, message] of FAILURES) {
  Deno.test(`Allocate fails clearly on ${what}`, async () => {
    await withFakeServer(script, async (server) => {
      const error = await TurnControl.allocate(server, creds, signal()).catch((e) => e);
      assert(error instanceof TurnError, String(error));
      assert(message.test(error.message), error.message);
      assert(!error.message.includes(PASSWORD), "no password in errors");
    });
  });
}

Deno.test("a stale nonce (438) is retried once with the new nonce", async () => {
  let stale = true;
  await withFakeServer((request, raw, n) => {
    const nonce = attribute(request, ATTR.NONCE);
    if (n > 0 && stale && nonce !== undefined && decodeText(nonce) === "n1") {
      stale = false;
      return error(request, 438, challenge("n2"));
    }
    return honest(request, raw, n);
  }, async (server) => {
    using control = await TurnControl.allocate(server, creds, signal());
    assertEquals(control.relayed, RELAYED);
    assertEquals(control.session().nonce, "n2");
  });
});

Deno.test("silence ends with the signal's reason, not a hang", async () => {
  await withFakeServer(() => new Uint8Array(0), async (server) => {
    await assertRejects(() => TurnControl.allocate(server, creds, AbortSignal.timeout(300)));
  });
});

Deno.test("REST API credentials: EXPIRY:USER and base64 HMAC-SHA1 of it with the secret", () => {
  const now = 1_700_000_000_000;
  const { username, password } = credentialsFor({ secret: "s3cret", user: "bob" }, now);
  assertEquals(username, `${1_700_000_000 + 86400}:bob`);
  // openssl: printf '1700086400:bob' | openssl dgst -sha1 -hmac s3cret -binary | base64
  assertEquals(password, "hh5nfI3KpobvjZcuf5nGuIxPzLM=");
  assertEquals(
    credentialsFor({ secret: "s3cret" }, now).username,
    `${1_700_000_000 + 86400}:punchd`,
  );
});

Deno.test("ConnectionAttempt indications are read in order, also when they come before a response", async () => {
  const attempt = (request: StunMessage, id: number) =>
    encode({
      method: METHOD.connectionAttempt,
      class: "indication",
      transactionId: request.transactionId.map((b) => b ^ 0xff),
      attributes: [
        { type: ATTR.CONNECTION_ID, value: encodeUint32(id) },
        {
          type: ATTR.XOR_PEER_ADDRESS,
          value: encodeXorAddress(
            inetAddress("198.51.100.1", 4000 + id),
            request.transactionId.map((b) => b ^ 0xff),
          ),
        },
      ],
    });
  await withFakeServer((request, raw, n) => {
    if (request.method === METHOD.createPermission) {
      const ok = answer(request, "success", [], KEY);
      const before = attempt(request, 1);
      const out = new Uint8Array(before.length + ok.length);
      out.set(before);
      out.set(ok, before.length);
      return out;
    }
    return honest(request, raw, n);
  }, async (server) => {
    using control = await TurnControl.allocate(server, creds, signal());
    await control.createPermission("198.51.100.1", signal());
    const first = await control.connectionAttempt(signal());
    assertEquals(first, { id: 1, peer: inetAddress("198.51.100.1", 4001) });
  });
});

Deno.test("the keeper releases an allocation whose connection is gone and refreshes a live one", async () => {
  const refreshes: number[] = [];
  await withFakeServer((request, raw, n) => {
    if (request.method === METHOD.refresh) {
      refreshes.push(decodeUint32(attribute(request, ATTR.LIFETIME) ?? new Uint8Array(4)));
      return answer(request, "success", [{ type: ATTR.LIFETIME, value: encodeUint32(0) }], KEY);
    }
    return honest(request, raw, n);
  }, async (server) => {
    const control = await TurnControl.allocate(server, creds, signal());
    let state: number | null = 1;
    const counts: number[] = [];
    const keeper = new TurnKeeper({
      log: new Logger("error", () => {}),
      checkMs: 60_000,
      tcpState: () => state,
      onChange: (count) => counts.push(count),
    });
    keeper.hold(control, inetAddress("127.0.0.1", 1), server);
    await keeper.check();
    assertEquals([keeper.size, refreshes], [1, []]);
    state = null; // The application closed its socket.
    await keeper.check();
    assertEquals([keeper.size, refreshes, counts], [0, [0], [1, 0]]);
    await keeper.close();
  });
});

Deno.test("procTcpState finds an established loopback connection by its addresses", async () => {
  const listener = Socket.create("inet", "stream", { reuseAddress: true });
  using _ = listener;
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen();
  const server = listener.localAddress() as InetAddress;
  using client = Socket.create("inet", "stream");
  await client.connect(server, signal());
  const { socket } = await listener.accept(signal());
  using _accepted = socket;
  const local = client.localAddress() as InetAddress;
  assertEquals(procTcpState(local, server), 1);
  assertEquals(procTcpState(inetAddress("127.0.0.1", 1), server), null);
});
