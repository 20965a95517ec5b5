/**
 * A standard STUN server in the lab: Debian's coturn (`turnserver`),
 * STUN only, on the internet router's server address and a second address
 * beside it, so that it offers RFC 5780 (OTHER-ADDRESS, CHANGE-REQUEST:
 * coturn enables it when it listens on two addresses of one family; the
 * alternate port is the port plus one). Started with a command line of its
 * own (no config file, its user database in a temporary directory), and
 * stopped with everything it made, on every path.
 *
 * @module
 */

import type { Lab } from "./lab.ts";
import { type Service, spawnService } from "./services.ts";

/** The second address coturn listens on (added to the internet router's loopback). */
export const ALTERNATE_IP = "172.16.0.2";
/** coturn's STUN port (its alternate port is 3479). */
export const STUN_PORT = 3478;

/** A running coturn. */
export interface StunServer {
  /** `IP:PORT` of its two addresses, primary first: what punchd gets as `--stun`. */
  addresses: [string, string];
  service: Service;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** True when coturn is installed. */
export function hasCoturn(): boolean {
  try {
    return Deno.statSync("/usr/bin/turnserver").isFile;
  } catch {
    return false;
  }
}

/** TURN service of the lab's coturn: long-term credentials, or a REST API shared secret. */
export type TurnAuth = { user: string; password: string } | { secret: string };

/** The realm of the lab's TURN server. */
export const TURN_REALM = "lab.punchd";

/**
 * Starts coturn in `lab`'s internet namespace and waits until it answers:
 * STUN only, or with `turn` a TURN server too (relaying from the server
 * address; TCP allocations, RFC 6062).
 */
export async function startStunServer(
  lab: Lab,
  options: { turn?: TurnAuth } = {},
): Promise<StunServer> {
  const ns = lab.internet.ns;
  await lab.exec(ns, ["ip", "addr", "add", `${ALTERNATE_IP}/32`, "dev", "lo"]);
  const dir = await Deno.makeTempDir({ prefix: "punchd-coturn-" });
  let service: Service | undefined;
  const stop = async () => {
    await service?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const turn = options.turn;
    const mode = turn === undefined ? ["--stun-only"] : [
      "--relay-ip",
      lab.serverIp,
      "--realm",
      TURN_REALM,
      ...("secret" in turn
        ? ["--use-auth-secret", "--static-auth-secret", turn.secret]
        : ["--lt-cred-mech", "--user", `${turn.user}:${turn.password}`]),
      // The lab's addresses are private ones; let the relay reach them (and nothing else).
      "--allowed-peer-ip",
      "172.16.0.0-172.16.255.255",
      "--allowed-peer-ip",
      "10.0.0.0-10.255.255.255",
      "--allowed-peer-ip",
      "100.64.0.0-100.127.255.255",
      "--no-udp-relay",
    ];
    service = spawnService(lab, ns, [
      "turnserver",
      "-n", // no configuration file
      ...mode,
      "--listening-ip",
      lab.serverIp,
      "--listening-ip",
      ALTERNATE_IP,
      "--listening-port",
      String(STUN_PORT),
      "--no-tls",
      "--no-dtls",
      "--no-cli",
      "--log-file",
      "stdout",
      "--simple-log",
      "--pidfile",
      `${dir}/turnserver.pid`,
      "--userdb",
      `${dir}/turndb`,
      "--no-software-attribute",
    ]);
    // Ready when both addresses listen on both ports, UDP and TCP.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const udp = await lab.exec(ns, ["ss", "-Hlun"]);
      const tcp = await lab.exec(ns, ["ss", "-Hltn"]);
      const ready = [lab.serverIp, ALTERNATE_IP].every((ip) =>
        [STUN_PORT, STUN_PORT + 1].every((port) =>
          udp.includes(`${ip}:${port} `) && tcp.includes(`${ip}:${port} `)
        )
      );
      if (ready) break;
      if (Date.now() > deadline) {
        throw new Error(`coturn did not start listening; its output:\n${service.output()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    addresses: [`${lab.serverIp}:${STUN_PORT}`, `${ALTERNATE_IP}:${STUN_PORT}`],
    service,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
