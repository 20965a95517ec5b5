import { assert, assertEquals, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  decode,
  encode,
  encodeAddress,
  encodeErrorCode,
  encodeXorAddress,
  METHOD,
  type StunMessage,
} from "../../src/stun/message.ts";
import { bindingTcp, bindingUdp, StunError } from "../../src/discovery/stun_client.ts";
import { observeTcp, observeUdp } from "../../src/discovery/endpoint.ts";

/** How a fake server answers one request. */
type Answer = (request: StunMessage, from: InetAddress) => Uint8Array[] | null;

function udpSocket(): { socket: Socket; address: InetAddress } {
  const socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  const local = socket.localAddress();
  if (local.family === "unix") throw new TypeError("not inet");
  return { socket, address: local };
}

function success(request: StunMessage, attributes: StunMessage["attributes"]): Uint8Array {
  return encode({
    method: METHOD.binding,
    class: "success",
    transactionId: request.transactionId,
    attributes,
  }, { fingerprint: true });
}

const mapped = (request: StunMessage, from: InetAddress) =>
  success(request, [{
    type: ATTR.XOR_MAPPED_ADDRESS,
    value: encodeXorAddress(from, request.transactionId),
  }]);

/** A fake UDP STUN server on loopback, answering each request with `answer`. */
async function withUdpServer(
  answer: Answer,
  body: (server: InetAddress, requests: () => number) => Promise<void>,
): Promise<void> {
  const { socket, address } = udpSocket();
  const stop = new AbortController();
  let count = 0;
  const loop = (async () => {
    const buf = new Uint8Array(2048);
    try {
      for (;;) {
        const { length, from } = await socket.receiveFrom(buf, stop.signal);
        if (from.family === "unix") continue;
        count++;
        const replies = answer(decode(buf.subarray(0, length)).message, from) ?? [];
        for (const reply of replies) await socket.sendTo(new Uint8Array(reply), from, stop.signal);
      }
    } catch {
      // Stopped.
    }
  })();
  try {
    await body(address, () => count);
  } finally {
    stop.abort();
    await loop;
    socket.close();
  }
}

Deno.test("bindingUdp reads XOR-MAPPED-ADDRESS: the endpoint the server saw", async () => {
  await withUdpServer((request, from) => [mapped(request, from)], async (server) => {
    const { socket, address } = udpSocket();
    using _ = socket;
    const result = await bindingUdp(socket, server, AbortSignal.timeout(5000));
    assertEquals(result?.mapped, address);
  });
});

Deno.test("bindingUdp falls back to MAPPED-ADDRESS of an RFC 3489 server", async () => {
  await withUdpServer(
    (
      request,
      from,
    ) => [success(request, [{ type: ATTR.MAPPED_ADDRESS, value: encodeAddress(from) }])],
    async (server) => {
      const { socket, address } = udpSocket();
      using _ = socket;
      assertEquals((await bindingUdp(socket, server, AbortSignal.timeout(5000)))?.mapped, address);
    },
  );
});

Deno.test("bindingUdp skips answers to other transactions and garbage, and takes the right one", async () => {
  await withUdpServer((request, from) => {
    const other = { ...request, transactionId: new Uint8Array(12).fill(7) };
    return [
      new TextEncoder().encode("observed|1.2.3.4|5"),
      mapped(other, inetAddress("9.9.9.9", 9)),
      mapped(request, from),
    ];
  }, async (server) => {
    const { socket, address } = udpSocket();
    using _ = socket;
    assertEquals((await bindingUdp(socket, server, AbortSignal.timeout(5000)))?.mapped, address);
  });
});

Deno.test("bindingUdp retransmits, then gives up with null after its tries", async () => {
  await withUdpServer(() => null, async (server, requests) => {
    const { socket } = udpSocket();
    using _ = socket;
    const result = await bindingUdp(socket, server, AbortSignal.timeout(5000), {
      tries: 3,
      rtoMs: 50,
    });
    assertEquals(result, null);
    assertEquals(requests(), 3);
  });
});

Deno.test("bindingUdp answers a lost first request with the second", async () => {
  let seen = 0;
  await withUdpServer(
    (request, from) => ++seen === 1 ? null : [mapped(request, from)],
    async (server) => {
      const { socket, address } = udpSocket();
      using _ = socket;
      const result = await bindingUdp(socket, server, AbortSignal.timeout(5000), { rtoMs: 50 });
      assertEquals(result?.mapped, address);
    },
  );
});

Deno.test("bindingUdp turns an error response into StunError with its code", async () => {
  await withUdpServer((request) => [encode({
    method: METHOD.binding,
    class: "error",
    transactionId: request.transactionId,
    attributes: [{ type: ATTR.ERROR_CODE, value: encodeErrorCode(420, "Unknown Attribute") }],
  })], async (server) => {
    const { socket } = udpSocket();
    using _ = socket;
    const error = await bindingUdp(socket, server, AbortSignal.timeout(5000)).catch((e) => e);
    assert(error instanceof StunError);
    assertEquals(
      error.message.includes("refused the Binding request: 420 Unknown Attribute"),
      true,
    );
    assertEquals(error.code, 420);
  });
});

Deno.test("a success response without a mapped address is a StunError", async () => {
  await withUdpServer((request) => [success(request, [])], async (server) => {
    const { socket } = udpSocket();
    using _ = socket;
    await assertRejects(
      () => bindingUdp(socket, server, AbortSignal.timeout(5000)),
      StunError,
      "no mapped address",
    );
  });
});

Deno.test("observeUdp reports the flow's local port and mapping", async () => {
  await withUdpServer((request, from) => [mapped(request, from)], async (server) => {
    const mapping = await observeUdp(
      inetAddress("127.0.0.1", 0),
      server,
      AbortSignal.timeout(5000),
    );
    assertEquals(mapping.ip, "127.0.0.1");
    assert(mapping.localPort > 0);
    assertEquals(mapping.port, mapping.localPort);
  });
});

/** A fake TCP STUN server: `answer` gets each request and writes what it returns, in pieces. */
async function withTcpServer(
  answer: (request: StunMessage, from: InetAddress) => Uint8Array | null,
  body: (server: InetAddress) => Promise<void>,
): Promise<void> {
  const listener = Socket.create("inet", "stream", { reuseAddress: true });
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen();
  const address = listener.localAddress() as InetAddress;
  const stop = new AbortController();
  const loop = (async () => {
    try {
      for (;;) {
        const { socket, address: from } = await listener.accept(stop.signal);
        using conn = socket;
        const buf = new Uint8Array(2048);
        let length = 0;
        while (length < 20 || length < 20 + ((buf[2] ?? 0) << 8 | (buf[3] ?? 0))) {
          const n = await conn.read(buf.subarray(length), stop.signal);
          if (n === 0) break;
          length += n;
        }
        const reply = answer(decode(buf.subarray(0, length)).message, from as InetAddress);
        if (reply !== null) {
          // In two writes: the client must put the frame together.
          await conn.write(new Uint8Array(reply.subarray(0, 7)), stop.signal);
          await new Promise((r) => setTimeout(r, 20));
          await conn.write(new Uint8Array(reply.subarray(7)), stop.signal);
        }
      }
    } catch {
      // Stopped.
    }
  })();
  try {
    await body(address);
  } finally {
    stop.abort();
    await loop;
    listener.close();
  }
}

Deno.test("bindingTcp reads a response split across reads (RFC 8489 stream framing)", async () => {
  await withTcpServer((request, from) => mapped(request, from), async (server) => {
    const mapping = await observeTcp(
      inetAddress("127.0.0.1", 0),
      server,
      AbortSignal.timeout(5000),
    );
    assertEquals(mapping.port, mapping.localPort);
    assertEquals(mapping.ip, "127.0.0.1");
  });
});

Deno.test("bindingTcp refuses a text answer (an old punchd probe port) as not STUN", async () => {
  await withTcpServer(
    () => new TextEncoder().encode("observed|127.0.0.1|4000\n"),
    async (server) => {
      const socket = Socket.create("inet", "stream");
      using _ = socket;
      await socket.connect(server, AbortSignal.timeout(5000));
      await assertRejects(
        () => bindingTcp(socket, server, AbortSignal.timeout(5000)),
        StunError,
        "not STUN",
      );
    },
  );
});

Deno.test("bindingTcp fails clearly when the server closes first", async () => {
  await withTcpServer(() => null, async (server) => {
    const socket = Socket.create("inet", "stream");
    using _ = socket;
    await socket.connect(server, AbortSignal.timeout(5000));
    await assertRejects(
      () => bindingTcp(socket, server, AbortSignal.timeout(5000)),
      StunError,
      "closed the connection first",
    );
  });
});
