/**
 * A throwaway copy of this system for installing packages: an overlay
 * filesystem whose lower layer is `/` and whose upper layer is a temporary
 * directory (or a tmpfs, where / is itself an overlay, as in a container), mounted (with /proc, /dev, /sys and fresh /run and /tmp) in a
 * private mount namespace that a holder process keeps alive; commands run
 * chrooted into it through nsenter. Whatever they change lands in the upper
 * layer; closing kills the holder, which takes the namespace and its mounts
 * with it, and removes the directory. Needs root and overlayfs.
 *
 * @module
 */

import { type Ran, run } from "./build.ts";

/** True when this kernel offers overlayfs. */
export function overlayAvailable(): boolean {
  try {
    return /\toverlay$/m.test(Deno.readTextFileSync("/proc/filesystems"));
  } catch {
    return false;
  }
}

/** The throwaway root. */
export class ThrowawayRoot {
  readonly #dir: string;
  readonly #holder: Deno.ChildProcess;
  #closed: Promise<void> | null = null;
  /** Both of the holder's pipes read to their end. */
  #drained: Promise<void> = Promise.resolve();

  private constructor(dir: string, holder: Deno.ChildProcess) {
    this.#dir = dir;
    this.#holder = holder;
  }

  /** The merged root as the host would see it inside the namespace (for nsenter commands). */
  get root(): string {
    return `${this.#dir}/merged`;
  }

  /** Mounts it; on failure removes what it made. */
  static async create(): Promise<ThrowawayRoot> {
    const dir = await Deno.makeTempDir({ prefix: "punchd-chroot-" });
    const m = `${dir}/merged`;
    for (const sub of ["upper", "work", "merged", "layers"]) await Deno.mkdir(`${dir}/${sub}`);
    const script = [
      "set -e",
      // The upper layer on disk; where that cannot be (the disk is itself an overlay, as in a
      // container), on a tmpfs of this namespace.
      `overlay() { mount -t overlay overlay -o lowerdir=/,upperdir=$1/upper,workdir=$1/work ${m}; }`,
      `if ! overlay ${dir} 2>/dev/null; then`,
      `  mount -t tmpfs -o mode=0755 tmpfs ${dir}/layers`,
      `  mkdir ${dir}/layers/upper ${dir}/layers/work`,
      `  overlay ${dir}/layers`,
      "fi",
      `mount -t proc proc ${m}/proc`,
      `mount --rbind /dev ${m}/dev`,
      `mount --rbind /sys ${m}/sys`,
      `mount -t tmpfs -o mode=0755 tmpfs ${m}/run`,
      `mount -t tmpfs -o mode=1777 tmpfs ${m}/tmp`,
      "echo ready",
      "exec sleep 3600",
    ].join("\n");
    const holder = new Deno.Command("unshare", {
      args: ["--mount", "--propagation", "private", "sh", "-c", script],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const root = new ThrowawayRoot(dir, holder);
    const stderr = new Response(holder.stderr).text();
    const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("ready\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      said += value;
    }
    // Drain the rest so the pipes close when the holder dies.
    root.#drained = Promise.all([
      (async () => {
        while (!(await reader.read()).done) { /* nothing more is said */ }
      })(),
      stderr,
    ]).then(() => {});
    if (!said.includes("ready\n")) {
      await root.close();
      throw new Error(`Cannot mount a throwaway root: ${(await stderr).trim()}`);
    }
    return root;
  }

  /** The holder's pid: `/proc/PID/root` + {@linkcode root} reaches the throwaway root from outside. */
  get pid(): number {
    return this.#holder.pid;
  }

  /** Spawns `command` chrooted into the throwaway root (PATH only); the caller reaps it. */
  spawn(command: string[], env: Record<string, string> = {}): Deno.ChildProcess {
    return new Deno.Command("nsenter", {
      args: ["-t", String(this.#holder.pid), "-m", "chroot", this.root, ...command],
      clearEnv: true,
      env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  /** Runs `command` chrooted into the throwaway root (PATH only in the environment). */
  run(command: string[], env: Record<string, string> = {}): Promise<Ran> {
    return run([
      "nsenter",
      "-t",
      String(this.#holder.pid),
      "-m",
      "chroot",
      this.root,
      ...command,
    ], { env });
  }

  /** Copies host file `from` to `to` inside the throwaway root. */
  async copyIn(from: string, to: string): Promise<void> {
    const ran = await run([
      "nsenter",
      "-t",
      String(this.#holder.pid),
      "-m",
      "cp",
      "--",
      from,
      `${this.root}${to}`,
    ]);
    if (ran.code !== 0) {
      throw new Error(`Cannot copy ${from} into the throwaway root: ${ran.stderr}`);
    }
  }

  /** Kills the holder (the namespace and its mounts go with it) and removes the directory. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      try {
        this.#holder.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await this.#holder.status;
      await this.#drained;
      await Deno.remove(this.#dir, { recursive: true });
    })();
    return this.#closed;
  }

  /** Same as close(). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
