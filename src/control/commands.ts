/**
 * The command table: each request type, what it needs, and whether it starts
 * an attempt. Permissions live here, not in handlers.
 *
 * Access to the socket file (mode 0660, owner root, `--group`) is the gate
 * for every command today: anyone who can connect may run them. A command
 * that needs more names its permission here and the daemon checks it before
 * the handler runs.
 *
 * @module
 */

import type { Ucred } from "../../ffi/structs.ts";
import type { Request } from "./codec.ts";

/** Who may run a command. */
export type Permission = "socket-access" | "root";

/** One row of the table. */
export interface Command {
  permission: Permission;
  /** True when the command creates an attempt entry under its ID. */
  startsAttempt: boolean;
  /** One-line description (README, --help). */
  summary: string;
}

/** Every command the control socket accepts. */
export const COMMANDS: Readonly<Record<Request["type"], Command>> = {
  initiate: {
    permission: "socket-access",
    startsAttempt: true,
    summary: "start a hole punching attempt",
  },
  respond: {
    permission: "socket-access",
    startsAttempt: true,
    summary: "answer an attempt a peer started",
  },
  peer: {
    permission: "socket-access",
    startsAttempt: false,
    summary: "forward later peer data to an attempt",
  },
  cancel: {
    permission: "socket-access",
    startsAttempt: false,
    summary: "cancel a running attempt",
  },
  endpoint: {
    permission: "socket-access",
    startsAttempt: false,
    summary: "learn the endpoint to publish",
  },
  status: {
    permission: "socket-access",
    startsAttempt: false,
    summary: "the daemon's state and counters",
  },
  report: {
    permission: "socket-access",
    startsAttempt: false,
    summary: "what the host's NAT does (runs discovery)",
  },
};

/** True when a client with `credentials` may run `command`. */
export function permitted(command: Command, credentials: Ucred): boolean {
  return command.permission === "socket-access" || credentials.uid === 0;
}
