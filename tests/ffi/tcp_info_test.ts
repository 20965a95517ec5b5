import { assert, assertEquals, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { decodeTcpInfo, tcpInfo } from "../../ffi/tcp_info.ts";

Deno.test("TCP_INFO of a loopback connection: established, options as negotiated, data counted", async () => {
  using listener = Socket.create("inet", "stream");
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen(1);
  using client = Socket.create("inet", "stream");
  const accepted = listener.accept();
  await client.connect(listener.localAddress());
  using server = (await accepted).socket;
  await client.write(new Uint8Array(1000));
  const buf = new Uint8Array(1000);
  let got = 0;
  while (got < 1000) got += await server.read(buf.subarray(got));
  const a = tcpInfo(client);
  const b = tcpInfo(server);
  assertEquals([a.state, b.state], [1, 1]);
  assertEquals([a.sndWscale, a.rcvWscale], [b.rcvWscale, b.sndWscale]);
  assertEquals([a.timestamps, a.sack], [b.timestamps, b.sack]);
  assertEquals(a.pmtu, 65535);
  assertEquals(a.advmss, 65535 - 40 - (a.timestamps ? 12 : 0));
  assert(a.sndMss > 0 && a.sndMss <= a.advmss);
  assertEquals(b.bytesReceived, 1000);
  assert(a.rtt > 0 && a.rto > 0);
});

Deno.test("struct tcp_info shorter than its fixed part is refused; later fields read 0 when absent", () => {
  assertThrows(() => decodeTcpInfo(new Uint8Array(100), 100), RangeError);
  const buf = new Uint8Array(232);
  buf[5] = 7; // timestamps, SACK, window scaling
  buf[6] = 0xa7; // snd_wscale 7, rcv_wscale 10
  new DataView(buf.buffer).setUint32(228, 123456, true);
  const full = decodeTcpInfo(buf, 232);
  assertEquals([full.timestamps, full.sack, full.sndWscale, full.rcvWscale], [true, true, 7, 10]);
  assertEquals(full.sndWnd, 123456);
  assertEquals(decodeTcpInfo(buf, 104).sndWnd, 0);
});
