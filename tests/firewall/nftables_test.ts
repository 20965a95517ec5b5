import { assert, assertEquals, assertMatch, assertRejects, assertThrows } from "../assert.ts";
import { guardElements } from "../../src/firewall/guards.ts";
import {
  createTable,
  deleteTable,
  listElements,
  type NftResult,
  type NftRunner,
} from "../../src/firewall/nftables.ts";
import { FirewallService, GuardLimitError } from "../../src/firewall/service.ts";
import { Logger } from "../../src/log.ts";
import { startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const flow = { localIp: "10.0.1.2", localPort: 40000, remoteIp: "172.16.2.2", remotePort: 50000 };
const quiet = new Logger("error", () => {});

/** A service writing through `nft`, with caps of `max` (total) and `perUid`. */
function serviceOf(
  nft: NftRunner,
  { max = 100, perUid = max, log = quiet }: { max?: number; perUid?: number; log?: Logger } = {},
): FirewallService {
  return new FirewallService({ log, maxElements: max, maxElementsPerUid: perUid, nft });
}

Deno.test("a time-exceeded guard keys the quoted IPv4 flow: source, destination, both ports", () => {
  assertEquals(guardElements({ kind: "time-exceeded", flow }), [
    // 10.0.1.2 . 172.16.2.2 . 40000 << 16 | 50000
    { set: "te4", key: "0x0a000102 . 0xac100202 . 0x9c40c350" },
  ]);
});

Deno.test("inbound guards key the packet from the peer, outbound ones the packet to it", () => {
  assertEquals(guardElements({ kind: "pure-syn", flow }), [
    { set: "syn4", key: "0xac100202 . 0x0a000102 . 0xc3509c40" },
  ]);
  assertEquals(guardElements({ kind: "rst-out", flow }), [
    { set: "rst4", key: "0x0a000102 . 0xac100202 . 0x9c40c350" },
  ]);
  // The allowed acknowledgement goes in before the guard that drops the others.
  assertEquals(guardElements({ kind: "syn-ack", flow, ack: 0xdeadbeef }), [
    { set: "saa4", key: "0xac100202 . 0x0a000102 . 0xc3509c40 . 0xdeadbeef" },
    { set: "sag4", key: "0xac100202 . 0x0a000102 . 0xc3509c40" },
  ]);
});

Deno.test("IPv6 guards use the v6 sets with 128-bit addresses", () => {
  const [element] = guardElements({
    kind: "time-exceeded",
    flow: { localIp: "2001:db8::1", localPort: 1, remoteIp: "2001:db8::2", remotePort: 2 },
  });
  assertEquals(element, {
    set: "te6",
    key: "0x20010db8000000000000000000000001 . 0x20010db8000000000000000000000002 . 0x00010002",
  });
});

Deno.test("a guard with mixed families, a bad port or a bad ack is refused", () => {
  assertThrows(
    () =>
      guardElements({
        kind: "rst-out",
        flow: { ...flow, remoteIp: "::1" },
      }),
    TypeError,
  );
  assertThrows(
    () => guardElements({ kind: "rst-out", flow: { ...flow, localPort: 0 } }),
    /Cannot build guard: source port 0 is not a port/,
  );
  assertThrows(() => guardElements({ kind: "syn-ack", flow, ack: 2 ** 32 }), RangeError);
});

/** An nft that records scripts and how many ran at once, and succeeds after `ms`. */
function fakeNft(ms = 5, fail?: (script: string) => boolean) {
  const scripts: string[] = [];
  let now = 0;
  let peak = 0;
  const nft: NftRunner = async (_args, input) => {
    now++;
    peak = Math.max(peak, now);
    await new Promise((r) => setTimeout(r, ms));
    now--;
    scripts.push(input ?? "");
    const bad = fail?.(input ?? "") ?? false;
    return { code: bad ? 1 : 0, stdout: "", stderr: bad ? "Error: no such table\n" : "" };
  };
  return { nft, scripts, peak: () => peak };
}

Deno.test("500 guards at once go through one nft process at a time, in a few batches", async () => {
  const fake = fakeNft();
  const service = serviceOf(fake.nft, { max: 10_000 });
  const adds = Array.from(
    { length: 500 },
    (_, i) =>
      service.add(i, 1000, {
        kind: "time-exceeded",
        flow: { ...flow, localPort: 1000 + i },
      }, 12_000),
  );
  await Promise.all(adds);
  assertEquals(fake.peak(), 1);
  assert(fake.scripts.length <= 3, `${fake.scripts.length} batches`);
  assertEquals(service.elements, 500);
  assertMatch(fake.scripts.join("\n"), /add element inet punchd te4 \{ .* timeout 12s \}/);
  await Promise.all(Array.from({ length: 500 }, (_, i) => service.release(i)));
  assertEquals(service.elements, 0);
  assertEquals(fake.peak(), 1);
});

Deno.test("caps: a non-root uid is held to its share, everyone to the total", async () => {
  const fake = fakeNft(0);
  const service = serviceOf(fake.nft, { max: 4, perUid: 2 });
  const guard = (port: number) => ({
    kind: "rst-out" as const,
    flow: { ...flow, localPort: port },
  });
  await service.add(1, 1000, guard(1), 5000);
  await service.add(1, 1000, guard(2), 5000);
  await assertRejects(
    () => service.add(2, 1000, guard(3), 5000),
    GuardLimitError,
    "Cannot add a firewall guard: this user holds 2 already",
  );
  // Another user still gets its share; root is bounded by the total only.
  await service.add(3, 1001, guard(4), 5000);
  await service.add(4, 0, guard(5), 5000);
  await assertRejects(
    () => service.add(5, 0, guard(6), 5000),
    GuardLimitError,
    "Cannot add a firewall guard: punchd holds 4 already",
  );
  await service.release(1);
  await service.add(2, 1000, guard(3), 5000);
  assertEquals(service.elements, 3);
});

Deno.test("a failing operation fails only its caller, not the batch it shared", async () => {
  const fake = fakeNft(2, (script) => script.includes("0x00070001"));
  const service = serviceOf(fake.nft);
  const ok = service.add(1, 5, { kind: "rst-out", flow: { ...flow, localPort: 6 } }, 1000);
  const bad = service.add(2, 5, {
    kind: "rst-out",
    flow: { ...flow, localPort: 7, remotePort: 1 },
  }, 1000);
  const later = service.add(3, 5, { kind: "rst-out", flow: { ...flow, localPort: 8 } }, 1000);
  await ok;
  await assertRejects(() => bad, /Cannot change the firewall: Error: no such table/);
  await later;
  assertEquals(service.elements, 2, "the failed guard is not counted");
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

async function withNamespace(name: string, body: (nft: NftRunner) => Promise<void>) {
  const ns = `pdfw${Deno.pid}${name}`;
  await new Deno.Command("ip", { args: ["netns", "add", ns] }).output();
  try {
    await body((args, input) => runInNs(ns, args, input));
  } finally {
    await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
  }
}

Deno.test({
  name: "guards become set elements in the kernel and go when released, even twice",
  ignore: ROOT,
}, async () => {
  await withNamespace("g", async (nft) => {
    await createTable(nft);
    const service = serviceOf(nft);
    await service.add(1, 0, { kind: "time-exceeded", flow }, 10_000);
    const h = await service.add(1, 0, { kind: "syn-ack", flow, ack: 5 }, 10_000);
    await service.add(2, 0, {
      kind: "pure-syn",
      flow: { localIp: "fd00::1", localPort: 1, remoteIp: "fd00::2", remotePort: 2 },
    }, 10_000);
    const elements = await listElements(nft);
    assertEquals(elements.map((e) => e.split(" ")[0]).sort(), ["saa4", "sag4", "syn6", "te4"]);
    await service.remove(1, h);
    await service.remove(1, h);
    assertEquals((await listElements(nft)).map((e) => e.split(" ")[0]).sort(), ["syn6", "te4"]);
    await service.release(1);
    await service.release(2);
    assertEquals(await listElements(nft), []);
    assertEquals(await deleteTable(nft), true);
    assertEquals(await deleteTable(nft), false);
  });
});

Deno.test({
  name: "a guard expires by itself, and removing it afterwards does not fail",
  ignore: ROOT,
}, async () => {
  await withNamespace("e", async (nft) => {
    await createTable(nft);
    const errors: string[] = [];
    const service = serviceOf(nft, { log: new Logger("error", (r) => errors.push(r.message)) });
    await service.add(1, 0, { kind: "rst-out", flow }, 1000);
    assertEquals((await listElements(nft)).length, 1);
    await new Promise((r) => setTimeout(r, 1600));
    assertEquals(await listElements(nft), [], "the element outlived its timeout");
    await service.release(1);
    assertEquals(errors, []);
    assertEquals(await listElements(nft), []);
  });
});

Deno.test({
  name: "punchd clears a killed daemon's table at start-up and deletes its table on shutdown",
  ignore: ROOT,
}, async () => {
  await withNamespace("d", async (nft) => {
    // What a killed daemon leaves: the table with a guard in it.
    await createTable(nft);
    const service = serviceOf(nft);
    await service.add(1, 0, { kind: "rst-out", flow }, 60_000);
    assertEquals((await listElements(nft)).length, 1);
    const ns = `pdfw${Deno.pid}d`;
    const daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    try {
      assertMatch(daemon.logs(), /firewall table ready/);
      assertEquals(await listElements(nft), []);
      const table = await nft(["list", "table", "inet", "punchd"]);
      assertEquals(table.code, 0, "the table should exist while punchd runs");
    } finally {
      assertEquals(await daemon.stop(), 0);
    }
    const gone = await nft(["list", "table", "inet", "punchd"]);
    assert(gone.code !== 0, "the table outlived the daemon");
  });
});
