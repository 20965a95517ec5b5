/**
 * `make deb`'s package, as an administrator checks it: its control fields,
 * contents (root-owned, nothing writable by others, everything where Debian
 * expects it), its conffile, and installing, upgrading in place, removing and
 * purging it in a throwaway root (an overlay of this system, see chroot.ts):
 * `punchd --version`, the punchd system user and group, the unit verified by
 * systemd-analyze, the service user running from the read-only tree, the
 * host's own users untouched.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { VERSION } from "../../src/daemon/config.ts";
import { isRoot, note, skipUnless } from "../helpers/skip.ts";
import { builtDeb, have, run } from "./build.ts";
import { overlayAvailable, ThrowawayRoot } from "./chroot.ts";

const needsDpkg = skipUnless(have("dpkg-deb"), "deb tests", "dpkg-deb is not installed");
const needsChroot = needsDpkg ||
  skipUnless(
    isRoot() && have("unshare") && have("nsenter") && overlayAvailable(),
    "deb install tests",
    "need root, unshare, nsenter and overlayfs",
  );

/** True when `path` (relative to this file) is a file. */
function exists(path: string): boolean {
  try {
    return Deno.statSync(new URL(path, import.meta.url)).isFile;
  } catch {
    return false;
  }
}

const manGenerator = exists("../../src/docs/man.ts");

async function must(command: string[]): Promise<string> {
  const ran = await run(command);
  if (ran.code !== 0) throw new Error(`${command.join(" ")}: exit ${ran.code}: ${ran.stderr}`);
  return ran.stdout;
}

/** `dpkg-deb --contents` as path -> [mode string, owner/group]. */
async function contents(deb: string): Promise<Map<string, [string, string]>> {
  const listing = await must(["dpkg-deb", "--contents", deb]);
  const files = new Map<string, [string, string]>();
  for (const line of listing.split("\n").filter((l) => l !== "")) {
    const [mode, owner, , , , ...path] = line.split(/\s+/);
    files.set(path.join(" ").replace(/^\./, ""), [mode ?? "", owner ?? ""]);
  }
  return files;
}

Deno.test({
  name: "the package is punchd at the daemon's version for this architecture",
  ignore: needsDpkg,
}, async () => {
  const deb = await builtDeb();
  const arch = (await must(["dpkg", "--print-architecture"])).trim();
  assert(deb.endsWith(`/punchd_${VERSION}_${arch}.deb`), deb);
  const fields = await must(["dpkg-deb", "--field", deb, "Package", "Version", "Architecture"]);
  assertEquals(fields, `Package: punchd\nVersion: ${VERSION}\nArchitecture: ${arch}\n`);
  assertMatch(await must(["dpkg-deb", "--field", deb, "Depends"]), /\badduser\b.*\bnftables\b/);
});

Deno.test({
  name: "the package's files are root's, none writable by others, each where Debian expects it",
  ignore: needsDpkg,
}, async () => {
  const files = await contents(await builtDeb());
  const expected: Record<string, string> = {
    "/usr/bin/punchd": "-rwxr-xr-x",
    "/usr/bin/punchd-rendezvous": "-rwxr-xr-x",
    "/lib/systemd/system/punchd.service": "-rw-r--r--",
    "/etc/punchd/punchd.toml": "-rw-r--r--",
    "/usr/lib/punchd/deno": "-rwxr-xr-x",
    "/usr/lib/punchd/src/daemon/main.ts": "-rw-r--r--",
    "/usr/lib/punchd/src/techniques/tcp_direct_worker.ts": "-rw-r--r--",
  };
  if (manGenerator) {
    const pages = ["man8/punchd.8", "man8/punchd-rendezvous.8", "man7/punchd.7"];
    if (exists("../../src/ctl/main.ts")) pages.push("man1/punchctl.1");
    for (const page of pages) {
      expected[`/usr/share/man/${page}.gz`] = "-rw-r--r--";
    }
  } else note("NOTE: deb contents: no man pages checked (src/docs/man.ts does not exist yet)");
  for (const [path, mode] of Object.entries(expected)) {
    assertEquals(files.get(path)?.[0], mode, path);
  }
  const notRoot = [...files].filter(([, [, owner]]) => owner !== "root/root").map(([p]) => p);
  assertEquals(notRoot, []);
  const writable = [...files].filter(([, [mode]]) =>
    !mode.startsWith("l") && (mode[5] === "w" || mode[8] === "w")
  ).map(([p]) => p);
  assertEquals(writable, []);
  const stray = [...files.keys()].filter((p) => /\/tests\/|_test\.ts$|\/\.git/.test(p));
  assertEquals(stray, []);
});

Deno.test({
  name: "the configuration file is a conffile (dpkg keeps an administrator's changes)",
  ignore: needsDpkg,
}, async () => {
  const conffiles = await must(["dpkg-deb", "--info", await builtDeb(), "conffiles"]);
  assertEquals(conffiles, "/etc/punchd/punchd.toml\n");
});

/**
 * The host's user and group databases and dpkg's record of punchd, to prove installing
 * elsewhere did not touch them.
 */
function hostUsers(): string[] {
  return [
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/var/lib/dpkg/info/punchd.list",
  ].map((f) => {
    try {
      return Deno.readTextFileSync(f);
    } catch {
      return "";
    }
  });
}

Deno.test({
  name:
    "installed in a throwaway root: punchd runs, as its own system user too, and the unit verifies",
  ignore: needsChroot,
}, async () => {
  const deb = await builtDeb();
  const before = hostUsers();
  {
    await using root = await ThrowawayRoot.create();
    await root.copyIn(deb, "/tmp/punchd.deb");
    const installed = await root.run(["dpkg", "-i", "/tmp/punchd.deb"]);
    assertEquals(installed.code, 0, installed.stdout + installed.stderr);
    const version = await root.run(["punchd", "--version"]);
    assertEquals([version.code, version.stdout, version.stderr], [0, `punchd ${VERSION}\n`, ""]);
    const help = await root.run(["punchd-rendezvous", "--help"]);
    assertEquals(help.code, 0, help.stderr);
    assertMatch(help.stdout, /^punchd-rendezvous: /);
    const user = await root.run(["getent", "passwd", "punchd"]);
    assertMatch(user.stdout, /^punchd:x:\d+:\d+:[^:]*:\/nonexistent:\/usr\/sbin\/nologin\n$/);
    const group = await root.run(["getent", "group", "punchd"]);
    assertMatch(group.stdout, /^punchd:x:\d+:\n$/);
    const uid = user.stdout.split(":")[2] ?? "";
    assert(Number(uid) < 1000, `punchd's uid ${uid} is a system uid`);
    // The service user: a read-only tree, which postinst transpiled into.
    const transpiled = await root.run(["ls", "/usr/lib/punchd/deno_dir"]);
    assertMatch(transpiled.stdout, /^gen$/m);
    const asService = await root.run([
      "setpriv",
      "--reuid=punchd",
      "--regid=punchd",
      "--clear-groups",
      "punchd",
      "--version",
    ], { HOME: "/nonexistent" });
    assertEquals([asService.code, asService.stdout, asService.stderr], [
      0,
      `punchd ${VERSION}\n`,
      "",
    ]);
    if (have("systemd-analyze")) {
      const verify = await root.run([
        "systemd-analyze",
        "verify",
        "--man=no",
        "/lib/systemd/system/punchd.service",
      ]);
      assertEquals([verify.code, verify.stdout + verify.stderr], [0, ""]);
    } else {
      note("NOTE: deb install: systemd-analyze is not installed; the unit was not verified");
    }
  }
  assertEquals(hostUsers(), before, "the host's users and groups did not change");
});

Deno.test({
  name:
    "reinstalling keeps one punchd user; remove keeps it and the configuration; purge removes all",
  ignore: needsChroot,
}, async () => {
  const deb = await builtDeb();
  const before = hostUsers();
  {
    await using root = await ThrowawayRoot.create();
    await root.copyIn(deb, "/tmp/punchd.deb");
    for (let i = 0; i < 2; i++) {
      const installed = await root.run(["dpkg", "-i", "/tmp/punchd.deb"]);
      assertEquals(installed.code, 0, installed.stdout + installed.stderr);
    }
    const count = async (file: string) =>
      (await root.run(["grep", "-c", "^punchd:", file])).stdout.trim();
    assertEquals([await count("/etc/passwd"), await count("/etc/group")], ["1", "1"]);
    const removed = await root.run(["dpkg", "--remove", "punchd"]);
    assertEquals(removed.code, 0, removed.stdout + removed.stderr);
    assertEquals([await count("/etc/passwd"), await count("/etc/group")], ["1", "1"]);
    assertEquals((await root.run(["test", "-f", "/etc/punchd/punchd.toml"])).code, 0);
    assertEquals((await root.run(["test", "-e", "/usr/lib/punchd"])).code, 1);
    const purged = await root.run(["dpkg", "--purge", "punchd"]);
    assertEquals(purged.code, 0, purged.stdout + purged.stderr);
    assertEquals([await count("/etc/passwd"), await count("/etc/group")], ["0", "0"]);
    for (const gone of ["/etc/punchd", "/usr/lib/punchd", "/usr/bin/punchd"]) {
      assertEquals((await root.run(["test", "-e", gone])).code, 1, `${gone} is gone`);
    }
  }
  assertEquals(hostUsers(), before, "the host's users and groups did not change");
});
