/**
 * A network namespace with a void in it: 10.99.0.1/24 on a veth whose
 * neighbour 10.99.0.2 has a MAC nobody owns, so SYNs to 10.99.0.2 leave d0,
 * reach the other end (d1, same namespace) and are dropped there. Nothing
 * answers and nothing leaves the namespace: attempts to 10.99.0.2 stay
 * pending until their deadline.
 *
 * @module
 */

import { processAlive } from "../lab/lab.ts";

/** The namespace's own address and the silent peer's. */
export const VOID_LOCAL = "10.99.0.1";
export const VOID_PEER = "10.99.0.2";

async function run(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0] ?? "", { args: args.slice(1), stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Deletes void namespaces whose creating process is gone (a run killed mid-test). */
async function removeStale(): Promise<void> {
  const list = await new Deno.Command("ip", { args: ["netns", "list"] }).output();
  for (const line of new TextDecoder().decode(list.stdout).split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const pid = name.match(/^pdvoid(\d+)[a-z]/)?.[1];
    if (pid !== undefined && !processAlive(Number(pid))) await run(["ip", "netns", "del", name]);
  }
}

/** Runs `body` with a fresh void namespace (named after the pid and `tag`), then deletes it. */
export async function withVoidNamespace(
  tag: string,
  body: (ns: string) => Promise<void>,
): Promise<void> {
  await removeStale();
  const ns = `pdvoid${Deno.pid}${tag}`;
  await run(["ip", "netns", "add", ns]);
  try {
    const ip = (...args: string[]) => run(["ip", "-n", ns, ...args]);
    await ip("link", "set", "lo", "up");
    await ip("link", "add", "d0", "type", "veth", "peer", "name", "d1");
    await ip("addr", "add", `${VOID_LOCAL}/24`, "dev", "d0");
    await ip("link", "set", "d0", "up");
    await ip("link", "set", "d1", "up");
    await ip(
      "neigh",
      "add",
      VOID_PEER,
      "lladdr",
      "02:00:00:00:00:02",
      "dev",
      "d0",
      "nud",
      "permanent",
    );
    await body(ns);
  } finally {
    await run(["ip", "netns", "del", ns]);
  }
}

/** The number of guards (set elements) in punchd's table in `ns`; 0 without a table. */
export async function guardCount(ns: string): Promise<number> {
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, "nft", "-j", "list", "table", "inet", "punchd"],
    stderr: "null",
  }).output();
  if (!out.success) return 0;
  const parsed = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nftables: { set?: { elem?: unknown[] } }[];
  };
  return parsed.nftables.reduce((n, item) => n + (item.set?.elem?.length ?? 0), 0);
}
