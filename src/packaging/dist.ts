/**
 * `make dist`: punchd's commands as single self-contained executables, built
 * offline.
 *
 * ```
 * deno run --allow-read --allow-write --allow-run --allow-env src/packaging/dist.ts [--deno PATH] [--out DIR] [--build DIR]
 * ```
 *
 * First a tree: the Deno runtime (`--deno`, default the running one), the
 * modules the entry points and the technique workers import (nothing else:
 * no tests, no examples), a deno.json with the import map entries they use
 * ({@linkcode runConfig}), a DENO_DIR holding the npm packages they use, and
 * warm.sh, which transpiles them where the tree ends up (it also proves here
 * that the tree needs nothing else). Then the payload, a reproducible gzip'd tar of the tree, and per command
 * `OUT/NAME`: a POSIX sh header (src/packaging/launcher.ts) followed by the
 * payload. An entry point that does not exist yet (punchctl) is skipped with
 * a warning. The Debian package (deb.ts) installs the same tree.
 *
 * Nothing is downloaded: `deno info` and warm.sh run with a proxy that
 * refuses every connection, so a module missing from the builder's cache (or
 * from the tree) fails the build.
 *
 * @module
 */

import { parseArgs } from "../cli.ts";
import {
  type Command,
  commands,
  headerFor,
  type Payload,
  taskPermissions,
  TREE,
} from "./launcher.ts";

/** The repository's root directory. */
export const REPO = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** punchd's version: `VERSION` in src/daemon/config.ts (read as text: building imports no daemon code). */
export async function readVersion(): Promise<string> {
  const text = await Deno.readTextFile(`${REPO}/src/daemon/config.ts`);
  const match = text.match(/^export const VERSION = "([0-9A-Za-z.+~-]+)";$/m);
  if (match?.[1] === undefined) {
    throw new SyntaxError("Cannot find VERSION in src/daemon/config.ts");
  }
  return match[1];
}

/** Options of {@linkcode buildTree}. */
export interface TreeOptions {
  /** The Deno binary to ship (and to build with). */
  deno: string;
  /** The tree's directory (replaced). */
  dir: string;
  /** Called with each warning (a missing optional entry point). */
  warn?: (text: string) => void;
}

/** A built tree and the commands it can run. */
export interface Tree {
  dir: string;
  commands: Command[];
  /** Files in the tree, relative paths, sorted. */
  files: string[];
}

/**
 * Runs a build step to completion and returns its stdout; throws with its stderr when it fails.
 * Shared by the Debian package's build (deb.ts).
 */
export async function must(
  command: string,
  args: string[],
  { env = {}, cwd }: { env?: Record<string, string>; cwd?: string } = {},
): Promise<string> {
  const child = await new Deno.Command(command, {
    args,
    ...(cwd !== undefined ? { cwd } : {}),
    env: { DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (child.code !== 0) {
    throw new Error(
      `Cannot run ${command} ${args.join(" ")}: ${
        decoder.decode(child.stderr).trim() || `exit ${child.code}`
      }`,
    );
  }
  return decoder.decode(child.stdout);
}

/** Environment of Deno at build time: a proxy that refuses every connection, so nothing is fetched. */
const OFFLINE = {
  HTTPS_PROXY: "http://127.0.0.1:9",
  HTTP_PROXY: "http://127.0.0.1:9",
  NO_PROXY: "",
} as const;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Every `*_worker.ts` under src/ (workers are loaded by URL, outside the static import graph). */
async function workerModules(): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(`${REPO}/${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.name.endsWith("_worker.ts")) found.push(path);
    }
  };
  await walk("src");
  return found.sort();
}

interface InfoModule {
  kind: string;
  local?: string;
  npmPackage?: string;
  dependencies?: { specifier: string }[];
}
interface InfoNpmPackage {
  name: string;
  version: string;
  dependencies: string[];
  registryUrl?: string;
  localPath?: string;
}

/** Local files and npm packages (name@version with their dependencies) `root` needs. */
async function moduleGraph(
  deno: string,
  root: string,
): Promise<{ files: string[]; npm: Map<string, InfoNpmPackage>; specifiers: Set<string> }> {
  // A proxy that refuses: nothing may be fetched while building.
  const text = await must(
    deno,
    ["info", "--json", "--frozen-lockfile", "--config", `${REPO}/deno.json`, `${REPO}/${root}`],
    { env: OFFLINE },
  );
  const info = JSON.parse(text) as {
    modules: InfoModule[];
    npmPackages?: Record<string, InfoNpmPackage>;
  };
  const files: string[] = [];
  const wanted: string[] = [];
  const specifiers = new Set<string>();
  for (const module of info.modules) {
    for (const dependency of module.dependencies ?? []) specifiers.add(dependency.specifier);
    if (module.kind === "npm" && module.npmPackage !== undefined) wanted.push(module.npmPackage);
    else if (module.local !== undefined) {
      if (!module.local.startsWith(`${REPO}/`)) {
        throw new Error(
          `Cannot package ${root}: it imports ${module.local}, outside the repository`,
        );
      }
      files.push(module.local.slice(REPO.length + 1));
    }
  }
  const npm = new Map<string, InfoNpmPackage>();
  const all = info.npmPackages ?? {};
  while (wanted.length > 0) {
    const id = wanted.pop() ?? "";
    if (npm.has(id)) continue;
    const pkg = all[id];
    if (pkg === undefined) {
      throw new Error(`Cannot package ${root}: npm package ${id} not in deno info`);
    }
    npm.set(id, pkg);
    wanted.push(...pkg.dependencies);
  }
  return { files, npm, specifiers };
}

async function copyDir(from: string, to: string): Promise<void> {
  await must("cp", ["-R", "--no-preserve=all", "--", from, to]);
}

/**
 * Builds the tree in `options.dir`: the runtime, the modules the commands
 * need, deno.json ({@linkcode runConfig}), a DENO_DIR with their npm
 * packages, warm.sh and the list of modules it transpiles; every file 0644
 * (the runtime and warm.sh 0755), every directory 0755.
 */
export async function buildTree(options: TreeOptions): Promise<Tree> {
  const deno = await Deno.realPath(options.deno);
  const denoJson = await Deno.readTextFile(`${REPO}/deno.json`);
  const present: Command[] = [];
  for (const command of commands(taskPermissions(denoJson))) {
    if (await exists(`${REPO}/${command.entry}`)) present.push(command);
    else if (command.required) throw new Error(`Cannot build ${command.name}: no ${command.entry}`);
    else options.warn?.(`skipping ${command.name}: ${command.entry} does not exist (yet)`);
  }
  const roots = [...present.map((c) => c.entry), ...await workerModules()];
  const files = new Set<string>();
  const npm = new Map<string, InfoNpmPackage>();
  const specifiers = new Set<string>();
  for (const root of roots) {
    const graph = await moduleGraph(deno, root);
    for (const file of graph.files) files.add(file);
    for (const [id, pkg] of graph.npm) npm.set(id, pkg);
    for (const specifier of graph.specifiers) specifiers.add(specifier);
  }
  await Deno.remove(options.dir, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  await Deno.mkdir(`${options.dir}/${TREE.denoDir}`, { recursive: true });
  for (const file of files) {
    const target = `${options.dir}/${file}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${REPO}/${file}`, target);
  }
  await Deno.copyFile(deno, `${options.dir}/${TREE.deno}`);
  await Deno.copyFile(new URL(TREE.warm, import.meta.url), `${options.dir}/${TREE.warm}`);
  await Deno.writeTextFile(`${options.dir}/${TREE.roots}`, roots.map((r) => `${r}\n`).join(""));
  await Deno.writeTextFile(
    `${options.dir}/${TREE.config}`,
    JSON.stringify(runConfig(denoJson, specifiers), null, 2) + "\n",
  );
  for (const pkg of npm.values()) {
    if (pkg.localPath === undefined) throw new Error(`Cannot package npm:${pkg.name}: not cached`);
    const host = new URL(pkg.registryUrl ?? "https://registry.npmjs.org/").host;
    const dir = `${options.dir}/${TREE.denoDir}/npm/${host}/${pkg.name}`;
    await Deno.mkdir(dir, { recursive: true });
    await copyDir(pkg.localPath, `${dir}/${pkg.version}`);
    const registry = `${pkg.localPath}/../registry.json`;
    if (await exists(registry)) await Deno.copyFile(registry, `${dir}/registry.json`);
  }
  // The proof that nothing will be fetched at run time: warm.sh, with the shipped runtime,
  // loads every root from the tree's DENO_DIR alone. What it made is keyed by absolute
  // paths, useless elsewhere: removed again (the tree's final home warms itself).
  await Deno.chmod(`${options.dir}/${TREE.warm}`, 0o755);
  await must(`${options.dir}/${TREE.warm}`, []);
  await must(`${options.dir}/${TREE.warm}`, ["--clean"]);
  await must("chmod", ["-R", "u=rwX,go=rX", "--", options.dir]);
  await Deno.chmod(`${options.dir}/${TREE.deno}`, 0o755);
  await Deno.chmod(`${options.dir}/${TREE.warm}`, 0o755);
  const listing =
    (await must("find", [options.dir, "-mindepth", "1", "-type", "f", "-printf", "%P\n"]))
      .split("\n").filter((l) => l !== "").sort();
  return { dir: options.dir, commands: present, files: listing };
}

/** Packs `tree` into `file` (a reproducible gzip'd tar: sorted, owner root, fixed times). */
export async function packTree(tree: string, file: string): Promise<Payload> {
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH") ?? "0";
  const tar = file.replace(/\.gz$/, "");
  await Deno.remove(file).catch(() => {});
  await must("tar", [
    "--sort=name",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    `--mtime=@${epoch}`,
    "-C",
    tree,
    "-cf",
    tar,
    ".",
  ]);
  await must("gzip", ["-n", "-6", "-f", tar]);
  const bytes = await Deno.readFile(file);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  return { sha256, size: bytes.length };
}

/**
 * Writes `out/NAME` for each command: its header, then the payload; mode
 * 0755. An executable left from an earlier build of a command that is not
 * built now is removed (it would carry other modules).
 */
export async function writeExecutables(
  tree: Tree,
  payloadFile: string,
  payload: Payload,
  out: string,
): Promise<string[]> {
  const version = await readVersion();
  await Deno.mkdir(out, { recursive: true });
  const built = new Set(tree.commands.map((c) => c.name));
  for (const command of commands([])) {
    if (!built.has(command.name)) await Deno.remove(`${out}/${command.name}`).catch(() => {});
  }
  const written: string[] = [];
  for (const command of tree.commands) {
    const path = `${out}/${command.name}`;
    const partial = `${path}.partial`;
    {
      using file = await Deno.open(partial, {
        write: true,
        create: true,
        truncate: true,
        mode: 0o755,
      });
      const header = headerFor(command, version, payload);
      for (let done = 0; done < header.length;) done += await file.write(header.subarray(done));
      using source = await Deno.open(payloadFile);
      await source.readable.pipeTo(file.writable, { preventClose: true });
    }
    await Deno.chmod(partial, 0o755);
    await Deno.rename(partial, path);
    written.push(path);
  }
  return written;
}

/**
 * The tree's deno.json: the import map entries the shipped modules use, and no
 * lock file. (The repository's lock was checked while building, with
 * `--frozen-lockfile`; the repository's own deno.json would make Deno install every
 * package it names, test tools included, and its lock would no longer match.)
 */
export function runConfig(denoJson: string, specifiers: ReadonlySet<string>): {
  imports: Record<string, string>;
  lock: false;
} {
  const imports = (JSON.parse(denoJson) as { imports?: Record<string, string> }).imports ?? {};
  const used = Object.entries(imports).filter(([key]) =>
    specifiers.has(key) || (key.endsWith("/") && [...specifiers].some((s) => s.startsWith(key)))
  );
  return { imports: Object.fromEntries(used), lock: false };
}

/** Builds the tree in `build/tree`, the payload and the executables in `out`. */
export async function buildDist(
  options: { deno: string; out: string; build: string; warn?: (text: string) => void },
): Promise<{ tree: Tree; payload: Payload; executables: string[] }> {
  const tree = await buildTree({
    deno: options.deno,
    dir: `${options.build}/tree`,
    ...(options.warn ? { warn: options.warn } : {}),
  });
  const payloadFile = `${options.build}/payload.tar.gz`;
  const payload = await packTree(tree.dir, payloadFile);
  const executables = await writeExecutables(tree, payloadFile, payload, options.out);
  return { tree, payload, executables };
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
  const say = (text: string) => Deno.stderr.writeSync(encoder.encode(`dist: ${text}\n`));
  try {
    const { payload, executables } = await buildDist({
      deno: values.deno ?? Deno.execPath(),
      out: values.out ?? `${REPO}/dist`,
      build: values.build ?? `${REPO}/build/dist`,
      warn: (text) => say(`warning: ${text}`),
    });
    say(`payload ${payload.sha256} (${payload.size} bytes)`);
    for (const path of executables) say(`wrote ${path}`);
  } catch (error) {
    say((error as Error).message);
    Deno.exit(1);
  }
}
