import { assertEquals, assertThrows } from "../assert.ts";
import { canonicalIp, formatIp, parseIp, parseIpv4, parseIpv6, parsePort } from "../../ffi/ip.ts";

Deno.test("parsePort accepts plain decimal ports 1..65535", () => {
  assertEquals([parsePort("1"), parsePort("80"), parsePort("65535")], [1, 80, 65535]);
  assertEquals(parsePort("0", { allowZero: true }), 0);
});

Deno.test("parsePort refuses what Number() would accept", () => {
  for (const bad of ["0x10", " 1", "1 ", "1e2", "+1", "-1", "01", "1.0", "", "65536", "0", "٣"]) {
    assertThrows(
      () => parsePort(bad),
      (e: Error) => e instanceof SyntaxError || e instanceof RangeError,
      bad,
    );
  }
});

Deno.test("parseIpv4 accepts dotted quads and refuses everything else", () => {
  assertEquals([...parseIpv4("192.0.2.255")], [192, 0, 2, 255]);
  for (
    const bad of [
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.2.3.4",
      "1.2.3.-4",
      "1.2.3.4 ",
      "a.b.c.d",
      "1..3.4",
      "0x1.2.3.4",
    ]
  ) {
    assertThrows(() => parseIpv4(bad), SyntaxError, bad);
  }
});

Deno.test("parseIpv6 handles ::, full form and an embedded IPv4 tail", () => {
  assertEquals(formatIp(parseIpv6("::")), "::");
  assertEquals(formatIp(parseIpv6("::1")), "::1");
  assertEquals(formatIp(parseIpv6("2001:DB8:0:0:0:0:0:1")), "2001:db8::1");
  assertEquals(formatIp(parseIpv6("fe80::1:0:0:2")), "fe80::1:0:0:2");
  assertEquals([...parseIpv6("::ffff:192.0.2.1").subarray(10)], [0xff, 0xff, 192, 0, 2, 1]);
  assertEquals(formatIp(parseIpv6("1:2:3:4:5:6:7:8")), "1:2:3:4:5:6:7:8");
});

Deno.test("parseIpv6 refuses malformed text", () => {
  for (
    const bad of [
      ":::",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "12345::",
      "g::1",
      "1:2:3:4:5:6:7",
      "::1.2.3",
      "[::1]",
      "::1%eth0",
      "",
    ]
  ) {
    assertThrows(() => parseIpv6(bad), SyntaxError, bad);
  }
});

Deno.test("formatIp uses RFC 5952: longest zero run compressed, lowercase", () => {
  assertEquals(canonicalIp("2001:0db8:0000:0000:0001:0000:0000:0001"), "2001:db8::1:0:0:1");
  assertEquals(canonicalIp("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
  assertEquals(parseIp("10.0.0.1").length, 4);
  assertEquals(parseIp("::2").length, 16);
});
