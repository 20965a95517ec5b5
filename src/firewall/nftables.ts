/**
 * The nftables table punchd owns, `inet punchd`, and nothing else.
 *
 * The daemon creates the table at start-up (deleting what a killed daemon
 * left) and deletes it on shutdown. Its rules never change while punchd
 * runs: attempts add and remove elements of its sets (guards.ts) through
 * the one firewall service (service.ts).
 *
 * Guards are written through libnftables in-process where the library is
 * installed ({@linkcode libraryNft}: a batch costs about 0.1 ms instead of
 * the 9-17 ms of spawning `nft`); the table itself is created, deleted and
 * listed by running `nft` (the daemon needs `--allow-run=nft`).
 *
 * @module
 */

import { Nftables } from "../../ffi/nftables.ts";
import { type CommandResult, runCommand } from "../process.ts";
import { TABLE, TABLE_RULESET } from "./guards.ts";

export { TABLE, TABLE_RULESET };

/** Result of one nft run. */
export type NftResult = CommandResult;

/** Runs nft; the runner is injectable for tests of callers. */
export type NftRunner = (args: string[], input?: string) => Promise<NftResult>;

/** Runs the `nft` binary. */
export const runNft: NftRunner = (args: string[], input?: string): Promise<NftResult> =>
  runCommand("nft", args, input);

/** An nft runner that calls libnftables in-process, and the way to free it. */
export interface LibraryNft {
  run: NftRunner;
  close(): Promise<void>;
}

/**
 * A runner through libnftables for `["-f", "-"]` with a script and for
 * plain commands (no options; words joined as `nft` joins its arguments);
 * anything else is spawned. Null when the library cannot be opened.
 */
export function libraryNft(): LibraryNft | null {
  const library = Nftables.open();
  if (library === null) return null;
  const run: NftRunner = (args, input) => {
    if (args.length === 2 && args[0] === "-f" && args[1] === "-") return library.run(input ?? "");
    if (args.length > 0 && args.every((a) => !a.startsWith("-"))) {
      return library.run(args.join(" "));
    }
    return runNft(args, input);
  };
  return { run, close: () => library.close() };
}

async function must(nft: NftRunner, what: string, args: string[], input?: string): Promise<string> {
  let result: NftResult;
  try {
    result = await nft(args, input);
  } catch (error) {
    throw new Error(`Cannot ${what}: cannot run nft (${(error as Error).message})`, {
      cause: error,
    });
  }
  if (result.code !== 0) {
    throw new Error(
      `Cannot ${what}: ${result.stderr.trim().split("\n")[0] ?? `nft exit ${result.code}`}`,
    );
  }
  return result.stdout;
}

/**
 * Runs `fn` with an nft runner for a one-off job (creating or deleting the
 * table): libnftables in-process when it opens, freed afterwards, else the
 * `nft` command. Saves two `nft` processes at start-up and one at stop.
 */
export async function withNft<T>(fn: (nft: NftRunner) => Promise<T>): Promise<T> {
  const library = libraryNft();
  try {
    return await fn(library?.run ?? runNft);
  } finally {
    await library?.close();
  }
}

/** Creates the table fresh (removing whatever a crashed daemon left in it). */
export async function createTable(nft: NftRunner = runNft): Promise<void> {
  await nft(["delete", "table", ...TABLE.split(" ")]);
  await must(nft, "create the punchd nftables table", ["-f", "-"], TABLE_RULESET);
}

/** Deletes the table and every rule in it; false when it did not exist. */
export async function deleteTable(nft: NftRunner = runNft): Promise<boolean> {
  const result = await nft(["delete", "table", ...TABLE.split(" ")]);
  return result.code === 0;
}

/** The elements now in the table's sets, one `SET KEY` line each (for tests and diagnostics). */
export async function listElements(nft: NftRunner = runNft): Promise<string[]> {
  const result = await nft(["-j", "list", "table", ...TABLE.split(" ")]);
  if (result.code !== 0) return [];
  const out: string[] = [];
  const parsed = JSON.parse(result.stdout) as { nftables: Record<string, unknown>[] };
  for (const item of parsed.nftables) {
    const set = item.set as { name: string; elem?: unknown[] } | undefined;
    for (const e of set?.elem ?? []) out.push(`${set?.name} ${JSON.stringify(e)}`);
  }
  return out;
}
