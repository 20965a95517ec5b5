/**
 * `make dist`'s self-extracting executables, as a user runs them: they print
 * the version and help of the commands they carry, unpack once into a cache
 * directory named by the payload's sha256 (shared by every command and every
 * concurrent first run), run from a cache they cannot write to, and refuse a
 * cache another user could have planted code in, or a damaged file.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { VERSION } from "../../src/daemon/config.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { builtDist, NOBODY, run } from "./build.ts";

const needsRoot = skipUnless(
  isRoot(),
  "dist tests as another user",
  "switching users and chown need root",
);

/** Asserts that `text` contains `part`. */
function assertStringIncludes(text: string, part: string, label = ""): void {
  assert(
    text.includes(part),
    `${label}: expected ${JSON.stringify(part)} in ${JSON.stringify(text)}`,
  );
}

/** Entries of `dir`, sorted. */
function entries(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("dist/punchd --version prints punchd's version, from a fresh cache", async () => {
  const dist = await builtDist();
  const cache = await dist.scratch();
  const ran = await run([`${dist.out}/punchd`, "--version"], { env: { PUNCHD_CACHE: cache } });
  assertEquals(ran.stderr, "");
  assertEquals(ran.stdout, `punchd ${VERSION}\n`);
  assertEquals(ran.code, 0);
  assertEquals(entries(cache), [dist.payload.sha256]);
});

Deno.test("dist/punchd-rendezvous --help prints the rendezvous server's usage", async () => {
  const dist = await builtDist();
  const cache = await dist.scratch();
  const ran = await run([`${dist.out}/punchd-rendezvous`, "--help"], {
    env: { PUNCHD_CACHE: cache },
  });
  assertEquals(ran.code, 0, ran.stderr);
  assertMatch(ran.stdout, /^punchd-rendezvous: rendezvous and probe server/);
  assertStringIncludes(ran.stdout, "--listen IP:PORT");
});

const hasPunchctl = (() => {
  try {
    return Deno.statSync(new URL("../../src/ctl/main.ts", import.meta.url)).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "dist/punchctl --help prints punchctl's usage",
  ignore: skipUnless(hasPunchctl, "dist/punchctl", "src/ctl/main.ts does not exist yet"),
}, async () => {
  const dist = await builtDist();
  const cache = await dist.scratch();
  const ran = await run([`${dist.out}/punchctl`, "--help"], { env: { PUNCHD_CACHE: cache } });
  assertEquals(ran.code, 0, ran.stderr);
  assertMatch(ran.stdout, /^punchctl /);
});

Deno.test("the executables carry the runtime and the modules they run, not tests or examples", async () => {
  const dist = await builtDist();
  const files = dist.tree.files;
  for (
    const needed of [
      "deno",
      "deno.json",
      "src/daemon/main.ts",
      "src/rendezvous/main.ts",
      "src/techniques/tcp_direct_worker.ts",
      "ffi/socket.ts",
    ]
  ) assert(files.includes(needed), `${needed} is missing from the payload`);
  const stray = files.filter((f) =>
    f.startsWith("tests/") || f.startsWith("src/examples/") || f.startsWith("src/packaging/") ||
    f.startsWith(".git") || f.endsWith("_test.ts") || f === "Makefile" || f === "README.md"
  );
  assertEquals(stray, []);
});

Deno.test("three first runs at once unpack one tree and leave no temporary directory", async () => {
  const dist = await builtDist();
  const cache = await dist.scratch();
  const runs = await Promise.all(
    ["punchd", "punchd", "punchd-rendezvous"].map((name) =>
      run([`${dist.out}/${name}`, name === "punchd" ? "--version" : "--help"], {
        env: { PUNCHD_CACHE: cache },
      })
    ),
  );
  for (const ran of runs) assertEquals(ran.code, 0, ran.stderr);
  assertEquals(entries(cache), [dist.payload.sha256]);
  const tree = Deno.statSync(`${cache}/${dist.payload.sha256}`);
  assertEquals(tree.mode! & 0o777, 0o755);
  assertEquals(tree.uid, Deno.uid());
});

Deno.test({
  name: "as another user without PUNCHD_CACHE it unpacks into ~/.cache/punchd, its own",
  ignore: needsRoot,
}, async () => {
  const dist = await builtDist();
  const home = await dist.scratch();
  await Deno.chown(home, NOBODY, NOBODY);
  const ran = await run([`${dist.out}/punchd`, "--version"], {
    env: { HOME: home },
    user: NOBODY,
  });
  assertEquals(ran.code, 0, ran.stderr);
  assertEquals(ran.stdout, `punchd ${VERSION}\n`);
  const tree = Deno.statSync(`${home}/.cache/punchd/${dist.payload.sha256}`);
  assertEquals([tree.uid, tree.mode! & 0o777], [NOBODY, 0o755]);
});

Deno.test({
  name: "another user runs from a root-owned cache it cannot write to",
  ignore: needsRoot,
}, async () => {
  const dist = await builtDist();
  const cache = await dist.scratch();
  const first = await run([`${dist.out}/punchd`, "--version"], { env: { PUNCHD_CACHE: cache } });
  assertEquals(first.code, 0, first.stderr);
  const denoDir = `${cache}/${dist.payload.sha256}/deno_dir`;
  const before = entries(denoDir);
  const ran = await run([`${dist.out}/punchd`, "--version"], {
    env: { PUNCHD_CACHE: cache, HOME: "/nonexistent" },
    user: NOBODY,
  });
  assertEquals(ran.stderr, "");
  assertEquals(ran.stdout, `punchd ${VERSION}\n`);
  assertEquals(entries(denoDir), before);
});

Deno.test({
  name: "a cache directory owned by another user is refused (the cache and the tree in it)",
  ignore: needsRoot,
}, async () => {
  const dist = await builtDist();
  for (const foreign of ["cache", "tree"]) {
    const cache = await dist.scratch();
    const tree = `${cache}/${dist.payload.sha256}`;
    await Deno.mkdir(tree, { mode: 0o755 });
    await Deno.chown(foreign === "cache" ? cache : tree, NOBODY, NOBODY);
    const ran = await run([`${dist.out}/punchd`, "--version"], { env: { PUNCHD_CACHE: cache } });
    assertEquals(ran.code, 1, foreign);
    assertEquals(ran.stdout, "", foreign);
    assertEquals(
      ran.stderr,
      `punchd: cannot use cache directory ${
        foreign === "cache" ? cache : tree
      }: owned by someone else or writable by group or others\n`,
    );
    assertEquals(entries(tree), [], `${foreign}: nothing was unpacked`);
  }
});

Deno.test("a cache directory writable by group or others is refused", async () => {
  const dist = await builtDist();
  for (const [which, mode] of [["cache", 0o775], ["cache", 0o757], ["tree", 0o775]] as const) {
    const cache = await dist.scratch();
    const tree = `${cache}/${dist.payload.sha256}`;
    await Deno.mkdir(tree);
    await Deno.chmod(tree, 0o755);
    await Deno.chmod(which === "cache" ? cache : tree, mode);
    const ran = await run([`${dist.out}/punchd`, "--version"], { env: { PUNCHD_CACHE: cache } });
    const label = `${which} ${mode.toString(8)}`;
    assertEquals(ran.code, 1, label);
    assertEquals(ran.stdout, "", label);
    assertStringIncludes(
      ran.stderr,
      `cannot use cache directory ${
        which === "cache" ? cache : tree
      }: owned by someone else or writable by group or others`,
      label,
    );
  }
});

Deno.test("a truncated or altered executable fails before unpacking anything", async () => {
  const dist = await builtDist();
  const bytes = await Deno.readFile(`${dist.out}/punchd`);
  const altered = bytes.slice();
  altered[altered.length - 100] = (altered[altered.length - 100] ?? 0) ^ 0xff;
  const cases = [
    { name: "truncated", bytes: bytes.subarray(0, bytes.length - 1000), error: "payload size" },
    { name: "altered", bytes: altered, error: "payload sha256" },
  ];
  for (const c of cases) {
    const dir = await dist.scratch();
    const file = `${dir}/punchd`;
    await Deno.writeFile(file, c.bytes, { mode: 0o755 });
    const cache = `${dir}/cache`;
    const ran = await run([file, "--version"], { env: { PUNCHD_CACHE: cache } });
    assertEquals(ran.code, 1, c.name);
    assertStringIncludes(ran.stderr, `punchd: ${file} is `, c.name);
    assertStringIncludes(ran.stderr, c.error, c.name);
    assertEquals(entries(cache), [], `${c.name}: nothing unpacked, no temporary directory left`);
  }
});
