/**
 * sd_notify(3) without libsystemd: one datagram to the unix socket named by
 * NOTIFY_SOCKET (a path, or `@name` in the abstract namespace), as systemd
 * gives a `Type=notify` service. `READY=1` once the control socket serves,
 * `STOPPING=1` when shutdown begins. Without NOTIFY_SOCKET it does nothing.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import type { UnixAddress } from "../../ffi/structs.ts";
import { startupEnv } from "../environ.ts";

/** The notification socket's address from `value` (NOTIFY_SOCKET), or null when unusable. */
export function notifyAddress(value: string | undefined): UnixAddress | null {
  if (value === undefined || value === "") return null;
  if (value.startsWith("@")) return { family: "unix", path: value.slice(1), abstract: true };
  if (!value.startsWith("/")) return null;
  return { family: "unix", path: value };
}

/**
 * Sends `state` (e.g. "READY=1") to the service manager. Resolves false when there is none or
 * the datagram could not be sent (the daemon runs on either way).
 */
export async function sdNotify(
  state: string,
  value: string | undefined = startupEnv("NOTIFY_SOCKET"),
): Promise<boolean> {
  const address = notifyAddress(value);
  if (address === null) return false;
  using socket = Socket.create("unix", "datagram");
  try {
    await socket.sendTo(new TextEncoder().encode(state), address, AbortSignal.timeout(1000));
    return true;
  } catch {
    return false;
  }
}
