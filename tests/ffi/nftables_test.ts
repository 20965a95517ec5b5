import { assertEquals, assertMatch } from "../assert.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = skipUnless(isRoot(), "libnftables tests", "nftables needs root");

/** Runs the fixture in a namespace of its own; returns its JSON line. */
async function inNamespace(): Promise<Record<string, unknown>> {
  const ns = `pdlibnft${Deno.pid}`;
  await new Deno.Command("ip", { args: ["netns", "add", ns] }).output();
  try {
    const fixture = new URL("../fixtures/nftables_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command("ip", {
      args: ["netns", "exec", ns, Deno.execPath(), "run", "--allow-all", fixture],
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, stderr);
    // libnftables printed nothing of its own: its output and errors are buffered.
    assertEquals(stderr, "");
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
  }
}

Deno.test({
  name:
    "libnftables runs batches in-process, one at a time, and returns errors instead of printing",
  ignore: ROOT,
}, async () => {
  const result = await inNamespace();
  assertEquals(result.made, 0);
  const bad = result.bad as { code: number; stderr: string };
  assertEquals(bad.code, 1);
  assertMatch(bad.stderr, /^Error: .*\nadd element inet fixture nosuchset/);
  assertEquals(result.many, Array(20).fill(0));
  assertEquals(result.chains, 20);
  // A large batch (on Deno's blocking pool) as well as small ones (on the caller's thread).
  assertEquals(result.large, { code: 0, bytes: true });
  assertEquals(result.bigChains, 200);
  // The firewall service writes its guards through the library, and they reach the kernel.
  assertEquals(result.inProcess, true);
  assertEquals((result.during as string[]).map((e) => e.split(" ")[0]), ["rst4"]);
  assertEquals(result.after, []);
});
