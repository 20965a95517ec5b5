/**
 * `make deb`: punchd's Debian package, built offline with dpkg-deb.
 *
 * ```
 * deno run --allow-read --allow-write --allow-run --allow-env src/packaging/deb.ts [--deno PATH] [--out DIR] [--build DIR]
 * ```
 *
 * Writes `OUT/punchd_VERSION_ARCH.deb` holding:
 * - /usr/lib/punchd/: the tree of `make dist` (dist.ts) unpacked: the Deno
 *   runtime, the modules, deno.json and DENO_DIR, all root-owned and read-only
 *   to the service (no cache to unpack or write at run time, every file known
 *   to dpkg);
 * - /usr/bin/punchd, punchd-rendezvous, punchctl: wrappers that run them from
 *   there with fixed permissions (launcher.ts);
 * - /lib/systemd/system/punchd.service (punchd.service here);
 * - /etc/punchd/punchd.toml (punchd.toml here), a conffile;
 * - man pages from src/docs/man.ts when it exists (skipped with a warning otherwise);
 * - maintainer scripts (debian/ here): the punchd system group and user.
 *
 * @module
 */

import { parseArgs } from "../cli.ts";
import { buildTree, must, readVersion, REPO } from "./dist.ts";
import { treeWrapper } from "./launcher.ts";

/** Where the tree is installed. */
export const TREE_DIR = "/usr/lib/punchd";

const HERE = new URL(".", import.meta.url).pathname;

async function install(from: string, to: string, mode: number): Promise<void> {
  await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
  await Deno.copyFile(from, to);
  await Deno.chmod(to, mode);
}

async function writeFile(path: string, text: string, mode: number): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, mode);
}

/** Options of {@linkcode buildDeb}. */
export interface DebOptions {
  /** The Deno binary to ship (and to build with). */
  deno: string;
  /** Directory of the .deb. */
  out: string;
  /** Work directory (replaced). */
  build: string;
  /** Called with each warning (a missing command or man page generator). */
  warn?: (text: string) => void;
}

/** Man pages (section, file) generated into `dir`, or none when the generator is missing. */
async function manPages(deno: string, dir: string, warn?: (text: string) => void) {
  const generator = `${REPO}/src/docs/man.ts`;
  try {
    await Deno.stat(generator);
  } catch {
    warn?.("no man pages: src/docs/man.ts does not exist (yet)");
    return [];
  }
  await Deno.mkdir(dir, { recursive: true });
  await must(deno, [
    "run",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    generator,
    "--out",
    dir,
  ], { cwd: REPO });
  const pages: { section: string; file: string }[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const section = entry.name.match(/\.([1-8])$/)?.[1];
    if (entry.isFile && section !== undefined) pages.push({ section, file: entry.name });
  }
  return pages.sort((a, b) => a.file.localeCompare(b.file));
}

/** The control file. */
export function controlFile(version: string, arch: string, installedKb: number): string {
  return `Package: punchd
Version: ${version}
Architecture: ${arch}
Maintainer: punchd developers <punchd@localhost>
Installed-Size: ${installedKb}
Depends: adduser, nftables
Section: net
Priority: optional
Description: hole punching daemon
 punchd establishes direct TCP and UDP connections between hosts behind NATs
 and firewalls (hole punching) on behalf of local applications, which ask it
 through a unix socket and receive the connected socket. It ships the Deno
 runtime it runs on, its rendezvous and probe server (punchd-rendezvous), the
 command punchctl, and a systemd service that runs it as user punchd with only
 CAP_NET_ADMIN and CAP_NET_RAW.
`;
}

/** Builds the package; returns its path. */
export async function buildDeb(options: DebOptions): Promise<string> {
  const version = await readVersion();
  const arch = (await must("dpkg", ["--print-architecture"])).trim();
  const root = `${options.build}/root`;
  await Deno.remove(options.build, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  const tree = await buildTree({
    deno: options.deno,
    dir: `${root}${TREE_DIR}`,
    ...(options.warn ? { warn: options.warn } : {}),
  });
  for (const command of tree.commands) {
    await writeFile(
      `${root}/usr/bin/${command.name}`,
      treeWrapper(command, TREE_DIR, version),
      0o755,
    );
  }
  await install(`${HERE}punchd.service`, `${root}/lib/systemd/system/punchd.service`, 0o644);
  await install(`${HERE}punchd.toml`, `${root}/etc/punchd/punchd.toml`, 0o644);
  for (const page of await manPages(options.deno, `${options.build}/man`, options.warn)) {
    const target = `${root}/usr/share/man/man${page.section}/${page.file}`;
    await install(`${options.build}/man/${page.file}`, target, 0o644);
    await must("gzip", ["-9", "-n", "-f", target]);
  }
  const debian = `${root}/DEBIAN`;
  for (const script of ["postinst", "prerm", "postrm"]) {
    await install(`${HERE}debian/${script}`, `${debian}/${script}`, 0o755);
  }
  await writeFile(`${debian}/conffiles`, "/etc/punchd/punchd.toml\n", 0o644);
  const md5sums = await must("sh", [
    "-c",
    "find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 md5sum",
  ], { cwd: root });
  await writeFile(`${debian}/md5sums`, md5sums, 0o644);
  const kb = Number((await must("du", ["-sk", "--exclude=DEBIAN", root])).split(/\s/)[0]);
  await writeFile(`${debian}/control`, controlFile(version, arch, kb), 0o644);
  // Every directory 0755, owned by root in the archive (--root-owner-group).
  await must("find", [root, "-type", "d", "-exec", "chmod", "0755", "{}", "+"]);
  await Deno.mkdir(options.out, { recursive: true });
  const deb = `${options.out}/punchd_${version}_${arch}.deb`;
  await must("dpkg-deb", ["--root-owner-group", "-Zgzip", "-z6", "--build", root, deb]);
  return deb;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      deno: { type: "string" },
      out: { type: "string" },
      build: { type: "string" },
    },
  });
  const encoder = new TextEncoder();
  const say = (text: string) => Deno.stderr.writeSync(encoder.encode(`deb: ${text}\n`));
  try {
    const deb = await buildDeb({
      deno: values.deno ?? Deno.execPath(),
      out: values.out ?? `${REPO}/dist`,
      build: values.build ?? `${REPO}/build/deb`,
      warn: (text) => say(`warning: ${text}`),
    });
    say(`wrote ${deb}`);
  } catch (error) {
    say((error as Error).message);
    Deno.exit(1);
  }
}
