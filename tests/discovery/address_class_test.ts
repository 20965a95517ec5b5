import { assertEquals, assertThrows } from "../assert.ts";
import { addressBlock, ambiguousRoute, hopSide } from "../../src/discovery/address_class.ts";

const BLOCKS: [string, string | null][] = [
  ["10.0.1.1", "10.0.0.0/8"],
  ["172.16.0.1", "172.16.0.0/12"],
  ["172.31.255.254", "172.16.0.0/12"],
  ["172.32.0.1", null],
  ["172.15.255.255", null],
  ["192.168.1.1", "192.168.0.0/16"],
  ["100.64.0.1", "100.64.0.0/10"],
  ["100.127.255.255", "100.64.0.0/10"],
  ["100.128.0.1", null],
  ["100.63.255.255", null],
  ["169.254.1.1", "169.254.0.0/16"],
  ["127.0.0.1", "127.0.0.0/8"],
  ["8.8.8.8", null],
  ["fd00:1::1", "fc00::/7"],
  ["fc00::1", "fc00::/7"],
  ["fe80::1", "fe80::/10"],
  ["febf::1", "fe80::/10"],
  ["fec0::1", null],
  ["::1", "::1/128"],
  ["2001:db8::1", null],
  ["::ffff:10.1.2.3", "10.0.0.0/8"],
  ["::ffff:8.8.8.8", null],
];

for (const [ip, cidr] of BLOCKS) {
  Deno.test(`${ip} is ${cidr ?? "public"}`, () => {
    assertEquals(addressBlock(ip)?.cidr ?? null, cidr);
  });
}

Deno.test("addressBlock refuses text that is not an address", () => {
  assertThrows(() => addressBlock("10.0.0.0x1"), {
    name: "SyntaxError",
    message: /Cannot parse IPv4 address "10.0.0.0x1"/,
  });
  assertThrows(() => addressBlock("router.example"), { name: "SyntaxError" });
});

const route = { source: "192.168.1.10", destination: "203.0.113.5" };

const SIDES: [string, { source: string; destination: string }, "inside" | "outside"][] = [
  // A home router, a carrier-grade NAT, then the first public router.
  ["192.168.1.1", route, "inside"],
  ["100.64.0.1", route, "inside"],
  ["198.51.100.1", route, "outside"],
  // An ISP's own private transfer network still counts as inside: probing goes on.
  ["10.200.0.1", route, "inside"],
  ["fe80::1", { source: "2001:db8::10", destination: "2001:db8:1::5" }, "inside"],
  ["fd00:a1::1", { source: "2001:db8::10", destination: "2001:db8:1::5" }, "inside"],
  ["2001:db8::1", { source: "2001:db8::10", destination: "2001:db8:1::5" }, "outside"],
  // The lab: LANs in 10/8, the carrier link in 100.64/10, the "internet" in 172.16/12.
  ["10.0.1.1", { source: "10.0.1.2", destination: "172.16.2.2" }, "inside"],
  ["100.64.1.1", { source: "10.0.1.2", destination: "172.16.2.2" }, "inside"],
  ["172.16.1.1", { source: "10.0.1.2", destination: "172.16.2.2" }, "outside"],
  // A router in the source's own block is never outside.
  ["10.0.1.1", { source: "10.0.1.2", destination: "10.9.9.9" }, "inside"],
];

for (const [hop, r, side] of SIDES) {
  Deno.test(`a router at ${hop} on ${r.source} -> ${r.destination} is ${side}`, () => {
    assertEquals(hopSide(hop, r).side, side);
  });
}

Deno.test("a route within one special-purpose block is ambiguous; across blocks or public it is not", () => {
  assertEquals(ambiguousRoute("10.0.1.2", "10.0.2.2"), true);
  assertEquals(ambiguousRoute("fd00:1::2", "fd00:b2::2"), true);
  assertEquals(ambiguousRoute("10.0.1.2", "172.16.2.2"), false);
  assertEquals(ambiguousRoute("192.168.1.2", "203.0.113.5"), false);
  assertEquals(ambiguousRoute("203.0.113.9", "203.0.113.5"), false);
});
