import { assertEquals, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  decode,
  decodeChangeRequest,
  encode,
  encodeAddress,
  encodeXorAddress,
  METHOD,
  type StunAttribute,
} from "../../src/stun/message.ts";
import {
  classifyNat,
  type FilteringBehavior,
  type MappingBehavior,
  NatBehaviorCache,
} from "../../src/discovery/nat_behavior.ts";
import { freePort } from "../helpers/daemon.ts";

/**
 * A fake RFC 5780 server on 127.0.0.1 and 127.0.0.2 (two ports each) that
 * plays a NAT in front of the client too: the mapped port it reports
 * depends on the destination as `mapping` says, and answers from another
 * address are dropped as `filtering` says.
 */
async function withFakeServer(
  mapping: MappingBehavior,
  filtering: FilteringBehavior,
  body: (primary: InetAddress) => Promise<void>,
  options: { otherAddress?: boolean } = {},
): Promise<void> {
  const ports = [freePort(), freePort()] as const;
  const ips = ["127.0.0.1", "127.0.0.2"] as const;
  const sockets = new Map<string, Socket>();
  for (const ip of ips) {
    for (const port of ports) {
      const socket = Socket.create("inet", "datagram");
      socket.bind(inetAddress(ip, port));
      sockets.set(`${ip}:${port}`, socket);
    }
  }
  const stop = new AbortController();
  const serve = (ipIndex: 0 | 1, portIndex: 0 | 1) => async () => {
    const here = inetAddress(ips[ipIndex], ports[portIndex]);
    const socket = sockets.get(formatAddress(here));
    if (socket === undefined) return;
    const buf = new Uint8Array(2048);
    try {
      for (;;) {
        const { length, from } = await socket.receiveFrom(buf, stop.signal);
        if (from.family === "unix") continue;
        const request = decode(buf.subarray(0, length)).message;
        const changeValue = attribute(request, ATTR.CHANGE_REQUEST);
        const change = changeValue === undefined
          ? { ip: false, port: false }
          : decodeChangeRequest(changeValue);
        const answerIp = change.ip ? 1 - ipIndex : ipIndex;
        const answerPort = change.port ? 1 - portIndex : portIndex;
        // The "NAT": which answers come back in.
        if (filtering === "apdf" && (change.ip || change.port)) continue;
        if (filtering === "adf" && change.ip) continue;
        // The "NAT": which public port this destination sees.
        const shift = mapping === "eim" ? 0 : mapping === "adm" ? ipIndex : ipIndex * 2 + portIndex;
        const seen = inetAddress("192.0.2.1", 40000 + shift);
        const origin = inetAddress(ips[answerIp] ?? "", ports[answerPort] ?? 0);
        const attributes: StunAttribute[] = [
          { type: ATTR.XOR_MAPPED_ADDRESS, value: encodeXorAddress(seen, request.transactionId) },
          { type: ATTR.RESPONSE_ORIGIN, value: encodeAddress(origin) },
        ];
        if (options.otherAddress !== false) {
          attributes.push({
            type: ATTR.OTHER_ADDRESS,
            value: encodeAddress(inetAddress(ips[1 - ipIndex] ?? "", ports[1 - portIndex] ?? 0)),
          });
        }
        const reply = encode({
          method: METHOD.binding,
          class: "success",
          transactionId: request.transactionId,
          attributes,
        });
        await sockets.get(formatAddress(origin))?.sendTo(new Uint8Array(reply), from, stop.signal);
      }
    } catch {
      // Stopped.
    }
  };
  const loops = [serve(0, 0)(), serve(0, 1)(), serve(1, 0)(), serve(1, 1)()];
  try {
    await body(inetAddress(ips[0], ports[0]));
  } finally {
    stop.abort();
    await Promise.all(loops);
    for (const socket of sockets.values()) socket.close();
  }
}

const FAST = { rtoMs: 100, filterRtoMs: 50 };

for (const mapping of ["eim", "adm", "apdm"] as const) {
  for (const filtering of ["eif", "adf", "apdf"] as const) {
    Deno.test(`classifyNat tells ${mapping} mapping and ${filtering} filtering apart`, async () => {
      await withFakeServer(mapping, filtering, async (server) => {
        const behavior = await classifyNat("127.0.0.1", server, AbortSignal.timeout(10_000), FAST);
        assertEquals(behavior?.mapping, mapping);
        assertEquals(behavior?.filtering, filtering);
        assertEquals(behavior?.noNat, false);
        assertEquals(behavior?.mapped, inetAddress("192.0.2.1", 40000));
      });
    });
  }
}

Deno.test("classifyNat says nothing (null) about a server without OTHER-ADDRESS", async () => {
  await withFakeServer("eim", "eif", async (server) => {
    assertEquals(await classifyNat("127.0.0.1", server, AbortSignal.timeout(10_000), FAST), null);
  }, { otherAddress: false });
});

Deno.test("classifyNat fails clearly when the server does not answer", async () => {
  const silent = Socket.create("inet", "datagram");
  using _ = silent;
  silent.bind(inetAddress("127.0.0.1", 0));
  const server = silent.localAddress() as InetAddress;
  await assertRejects(
    () => classifyNat("127.0.0.1", server, AbortSignal.timeout(10_000), FAST),
    Error,
    `Cannot classify the NAT: no answer from ${formatAddress(server)}`,
  );
});

Deno.test("NatBehaviorCache runs the tests once per server and forgets failures", async () => {
  let runs = 0;
  const cache = new NatBehaviorCache();
  const server = inetAddress("127.0.0.1", 3478);
  const found = {
    mapping: "eim" as const,
    filtering: "apdf" as const,
    mapped: server,
    noNat: false,
  };
  const classify = () => {
    runs++;
    return Promise.resolve(found);
  };
  assertEquals(await cache.get("10.0.0.1", server, classify), found);
  assertEquals(await cache.get("10.0.0.1", server, classify), found);
  assertEquals(runs, 1);
  const failing = () => {
    runs++;
    return Promise.reject(new Error("no answer"));
  };
  const other = inetAddress("127.0.0.1", 3479);
  await assertRejects(() => cache.get("10.0.0.1", other, failing));
  await assertRejects(() => cache.get("10.0.0.1", other, failing));
  assertEquals(runs, 3);
});

Deno.test("NatBehaviorCache runs the tests again once the answer is old", async () => {
  let now = 0;
  let runs = 0;
  const cache = new NatBehaviorCache({ maxAgeMs: 1000, now: () => now });
  const server = inetAddress("127.0.0.1", 3478);
  const classify = () => Promise.resolve((runs++, null));
  await cache.get("10.0.0.1", server, classify);
  now = 999;
  await cache.get("10.0.0.1", server, classify);
  now = 1000;
  await cache.get("10.0.0.1", server, classify);
  assertEquals(runs, 2);
});
