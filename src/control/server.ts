/**
 * The control socket: an AF_UNIX stream socket made through FFI (its fds are
 * needed for SCM_RIGHTS), created mode 0660 with an optional group, with
 * stale-socket detection, and an accept loop handing out ClientConnections.
 *
 * @module
 */

import { dirname } from "node:path";
import { ECONNREFUSED, ENOENT, SyscallError } from "../../ffi/errno.ts";
import { Socket } from "../../ffi/socket.ts";
import * as sys from "../../ffi/syscalls.ts";
import { StartupError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { ClientConnection, DEFAULT_SOCKET_PATH } from "./connection.ts";
import { TurnScheduler } from "./turns.ts";

export { DEFAULT_SOCKET_PATH };

/**
 * Checks that nobody but root (or the daemon's own uid) can replace the
 * socket or the directories above it, like sshd's StrictModes: the socket's
 * directory must be owned by root or the daemon and writable by its owner
 * only; every directory above it must be owned by root or the daemon and
 * either not writable by others or sticky (like /tmp above a private
 * directory). Symlinks are not followed. Throws StartupError.
 */
export async function checkDirectory(path: string, ownUid: number): Promise<void> {
  const dir = dirname(path);
  let current = dir;
  for (;;) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(current);
    } catch (error) {
      throw new StartupError(`Cannot listen on ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const mode = info.mode ?? 0;
    const why = !info.isDirectory
      ? "is not a directory (symlinks are not followed)"
      : info.uid !== 0 && info.uid !== ownUid
      ? `is owned by uid ${info.uid}, not root`
      : current === dir && (mode & 0o022) !== 0
      ? "is writable by others than its owner (a user could replace the socket)"
      : (mode & 0o002) !== 0 && (mode & 0o1000) === 0
      ? "is writable by everyone and not sticky"
      : null;
    if (why !== null) {
      throw new StartupError(
        `Cannot listen on ${path}: ${current} ${why}; use a root-owned directory such as /run/punchd`,
      );
    }
    if (current === "/") return;
    current = dirname(current);
  }
}

/**
 * Creates the socket's directory when it is missing, mode 0750, owned by
 * root and `gid` (so only the group can reach the socket at all). An existing
 * directory is left as it is and checked by {@linkcode checkDirectory}.
 */
export function prepareDirectory(path: string, gid?: number): void {
  const dir = dirname(path);
  // The mode comes from the umask: never a moment with more than 0750.
  const previous = sys.umask(0o027);
  try {
    if (!sys.mkdir(dir, 0o750)) return;
  } catch (error) {
    throw new StartupError(`Cannot create ${dir}: ${(error as Error).message}`, { cause: error });
  } finally {
    sys.umask(previous);
  }
  try {
    if (gid !== undefined) sys.lchown(dir, -1, gid);
  } catch (error) {
    throw new StartupError(`Cannot prepare ${dir}: ${(error as Error).message}`, { cause: error });
  }
}

/** Options of the control socket. */
export interface ControlServerOptions {
  /** Filesystem path of the socket. */
  path: string;
  /** Group that may connect (mode 0660); undefined keeps the daemon's group. */
  gid?: number;
  log: Logger;
}

/**
 * Decides what to do with an existing path: nothing there, a stale socket
 * (removed), a live daemon or a non-socket file (errors).
 */
async function clearStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw new StartupError(`Cannot inspect ${path}: ${(error as Error).message}`, { cause: error });
  }
  if (!info.isSocket) throw new StartupError(`Cannot use ${path}: it exists and is not a socket`);
  const probe = Socket.create("unix", "stream");
  try {
    await probe.connect({ family: "unix", path }, AbortSignal.timeout(2000));
  } catch (error) {
    if (error instanceof SyscallError && (error.errno === ECONNREFUSED || error.errno === ENOENT)) {
      sys.unlink(path);
      return;
    }
    throw new StartupError(`Cannot check ${path} for a live daemon: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    probe.close();
  }
  throw new StartupError(`Cannot listen on ${path}: another punchd is answering there`);
}

/** The listening control socket. */
export class ControlServer {
  readonly #listener: Socket;
  readonly #path: string;
  readonly #log: Logger;
  #nextClient = 1;
  readonly #stopped = new AbortController();
  /** Every client's requests take turns here (see turns.ts). */
  readonly #turns = new TurnScheduler();

  private constructor(listener: Socket, path: string, log: Logger) {
    this.#listener = listener;
    this.#path = path;
    this.#log = log;
  }

  /**
   * Checks that `path` can be used: its directory exists, and nothing but a
   * stale socket is there (which is removed). Throws StartupError when
   * another punchd answers there or the path is not a socket.
   */
  static async ensureAvailable(path: string, gid?: number): Promise<void> {
    prepareDirectory(path, gid);
    await checkDirectory(path, sys.effectiveUid());
    await clearStaleSocket(path);
  }

  /** Creates the socket file (replacing a stale one) and starts listening. */
  static async listen(options: ControlServerOptions): Promise<ControlServer> {
    const { path, log } = options;
    await ControlServer.ensureAvailable(path, options.gid);
    const listener = Socket.create("unix", "stream");
    let bound = false;
    try {
      // The socket file is created by bind: set the mode through umask so
      // that nobody outside owner and group can connect, even for a moment.
      const previous = sys.umask(0o117);
      try {
        listener.bind({ family: "unix", path });
        bound = true;
      } finally {
        sys.umask(previous);
      }
      // lchown: never a symlink's target. The mode came from the umask.
      if (options.gid !== undefined) sys.lchown(path, -1, options.gid);
      const info = await Deno.lstat(path);
      if (!info.isSocket || ((info.mode ?? 0) & 0o777) !== 0o660) {
        throw new StartupError(
          `Cannot listen on ${path}: it is not a socket of mode 0660 after bind`,
        );
      }
      listener.listen(128);
    } catch (error) {
      listener.close();
      // Remove only the file this call created, never another daemon's socket.
      if (bound) sys.unlink(path);
      if (error instanceof StartupError) throw error;
      throw new StartupError(`Cannot listen on ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    log.info("listening", { socket: path });
    return new ControlServer(listener, path, log);
  }

  /** The socket path. */
  get path(): string {
    return this.#path;
  }

  /** Yields each new client until stop(). Accept errors are logged, not fatal. */
  async *clients(): AsyncGenerator<ClientConnection> {
    while (!this.#stopped.signal.aborted) {
      let accepted: { socket: Socket };
      try {
        accepted = await this.#listener.accept(this.#stopped.signal);
      } catch (error) {
        if (this.#stopped.signal.aborted) return;
        // EMFILE and friends: log, back off briefly, keep serving others.
        this.#log.error("accept failed", { error: (error as Error).message });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      let credentials;
      try {
        credentials = sys.peerCredentials(accepted.socket.fd);
      } catch (error) {
        this.#log.warn("cannot read client credentials; closing", {
          error: (error as Error).message,
        });
        accepted.socket.close();
        continue;
      }
      yield new ClientConnection(accepted.socket, this.#nextClient++, credentials, this.#turns);
    }
  }

  /** Stops accepting, closes the socket and removes the socket file. */
  stop(): void {
    if (this.#stopped.signal.aborted) return;
    this.#stopped.abort();
    this.#listener.close();
    try {
      sys.unlink(this.#path);
    } catch (error) {
      this.#log.warn("cannot remove socket file", {
        socket: this.#path,
        error: (error as Error).message,
      });
    }
  }
}
