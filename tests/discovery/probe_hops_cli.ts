/**
 * Runs one hop discovery and prints its result as JSON: the lab tests run
 * it inside a host's namespace (`deno run probe_hops_cli.ts SOURCE DESTINATION`).
 *
 * @module
 */

import { probeHops } from "../../src/discovery/hop_probe.ts";

const [source = "", destination = ""] = Deno.args;
const result = await probeHops({ source, destination }, AbortSignal.timeout(20_000));
Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(result) + "\n"));
