import { assertEquals } from "../assert.ts";
import { mappingOf } from "../../src/auto/local.ts";

const locals = [{ ip: "10.0.1.2", prefixLength: 24 }];
const known = (how: string, nat?: string) => ({
  ip: "172.16.1.2",
  ports: [4000],
  how,
  ...(nat === undefined ? {} : { nat }),
});

Deno.test("the hello's mapping follows the endpoint answer's HOW", () => {
  assertEquals(mappingOf(undefined, locals), "unk");
  assertEquals(mappingOf(known("local"), locals), "unk");
  assertEquals(mappingOf({ ...known("preserved"), ip: "10.0.1.2" }, locals), "none");
  assertEquals(mappingOf(known("preserved"), locals), "pre");
  assertEquals(mappingOf(known("consistent"), locals), "eim");
  assertEquals(mappingOf(known("delta+1"), locals), "seq");
  assertEquals(mappingOf(known("random"), locals), "rnd");
});

Deno.test("RFC 5780's mapping test makes one STUN server's unclear answer predictable", () => {
  // One server cannot show "consistent"; its RFC 5780 tests can (endpoint-independent mapping).
  assertEquals(mappingOf(known("random", "eim,apdf"), locals), "eim");
  assertEquals(mappingOf(known("random", "apdm,apdf"), locals), "rnd");
  assertEquals(mappingOf(known("preserved", "eim,eif"), locals), "pre");
});
