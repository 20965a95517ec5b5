import { assert, assertEquals, assertMatch, assertThrows } from "../assert.ts";
import {
  addRule,
  createTable,
  deleteRule,
  deleteTable,
  listRules,
  type NftResult,
  type NftRunner,
  timeExceededDropRule,
} from "../../src/firewall/nftables.ts";
import { startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

Deno.test("the time-exceeded rule matches exactly the quoted IPv4 flow", () => {
  assertEquals(
    timeExceededDropRule({
      localIp: "10.0.1.2",
      localPort: 40000,
      remoteIp: "172.16.2.2",
      remotePort: 50000,
    }),
    // quoted protocol TCP, quoted source 10.0.1.2, quoted destination 172.16.2.2, ports 40000 -> 50000
    "meta l4proto icmp icmp type time-exceeded @th,136,8 6 @th,160,32 0x0a000102 @th,192,32 0xac100202 " +
      "@th,224,16 40000 @th,240,16 50000 counter drop",
  );
});

Deno.test("the time-exceeded rule for IPv6 skips the 40-byte quoted header", () => {
  const rule = timeExceededDropRule({
    localIp: "2001:db8::1",
    localPort: 1,
    remoteIp: "2001:db8::2",
    remotePort: 2,
  });
  assertMatch(rule, /^meta l4proto ipv6-icmp icmpv6 type time-exceeded @th,112,8 6 /);
  assertMatch(
    rule,
    /@th,128,128 0x20010db8000000000000000000000001 @th,256,128 0x20010db8000000000000000000000002/,
  );
  assertMatch(rule, /@th,384,16 1 @th,400,16 2 counter drop$/);
  assertThrows(
    () =>
      timeExceededDropRule({ localIp: "10.0.0.1", localPort: 1, remoteIp: "::1", remotePort: 2 }),
    TypeError,
  );
});

/** Runs nft inside namespace `ns` (an NftRunner for punchd's firewall functions). */
async function runInNs(ns: string, args: string[], input?: string): Promise<NftResult> {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", ns, "nft", ...args],
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(input));
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

const ROOT = skipUnless(isRoot(), "nftables tests", "nftables needs root");

Deno.test({
  name: "rules are added by handle, listed, and deleted; the table goes with everything in it",
  ignore: ROOT,
}, async () => {
  const ns = `pdfw${Deno.pid}`;
  await new Deno.Command("ip", { args: ["netns", "add", ns] }).output();
  const nft: NftRunner = (args, input) => runInNs(ns, args, input);
  try {
    await createTable(nft);
    const rule = timeExceededDropRule({
      localIp: "10.0.1.2",
      localPort: 1,
      remoteIp: "10.0.2.2",
      remotePort: 2,
    });
    const handle = await addRule("input", rule, "punchd t1", nft);
    const rules = await listRules(nft);
    assertEquals(rules.length, 1);
    assertMatch(rules[0] ?? "", new RegExp(`comment "punchd t1" # handle ${handle}$`));
    assertEquals(await deleteRule("input", handle, nft), true);
    assertEquals(await deleteRule("input", handle, nft), false);
    assertEquals(await listRules(nft), []);
    await addRule("input", rule, "punchd t2", nft);
    assertEquals(await deleteTable(nft), true);
    assertEquals(await deleteTable(nft), false);
    assertEquals(await listRules(nft), []);
  } finally {
    await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
  }
});

Deno.test({
  name: "punchd clears a crashed daemon's table at start-up and deletes its table on shutdown",
  ignore: ROOT,
}, async () => {
  const ns = `pdfw${Deno.pid}d`;
  await new Deno.Command("ip", { args: ["netns", "add", ns] }).output();
  const nft: NftRunner = (args, input) => runInNs(ns, args, input);
  try {
    // What a killed daemon leaves: the table with a rule in it.
    await createTable(nft);
    await addRule("input", "tcp dport 9 drop", "punchd leftover", nft);
    assertEquals((await listRules(nft)).length, 1);
    const daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    try {
      assertMatch(daemon.logs(), /firewall table ready/);
      assertEquals(await listRules(nft), []);
      const table = await runInNs(ns, ["list", "table", "inet", "punchd"]);
      assertEquals(table.code, 0, "the table should exist while punchd runs");
    } finally {
      assertEquals(await daemon.stop(), 0);
    }
    const gone = await runInNs(ns, ["list", "table", "inet", "punchd"]);
    assert(gone.code !== 0, "the table outlived the daemon");
  } finally {
    await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
  }
});
