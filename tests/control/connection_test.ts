import { assertEquals } from "../assert.ts";
import { type Line, LineSplitter } from "../../src/control/connection.ts";

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
