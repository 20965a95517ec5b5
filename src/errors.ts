/**
 * punchd's domain errors. Shape problems are TypeError, out-of-range values
 * RangeError, unparseable text SyntaxError; these classes are for what
 * callers handle.
 *
 * @module
 */

/** An attempt did not finish within its time limit. */
export class AttemptTimeoutError extends Error {
  /** Builds the error after `ms` milliseconds. */
  constructor(ms: number, options?: ErrorOptions) {
    super(`Cannot finish attempt: timed out after ${ms} ms`, options);
    this.name = "AttemptTimeoutError";
  }
}

/** An attempt with the same id is already running for this client. */
export class AlreadyActiveError extends Error {
  /** Builds the error for attempt `id`. */
  constructor(id: string) {
    super(`Cannot start attempt ${id}: an attempt with this id is already active`);
    this.name = "AlreadyActiveError";
  }
}

/** An attempt was cancelled (by the client, a disconnect or shutdown). */
export class CancelledError extends Error {
  /** Builds the error with the reason for the cancellation. */
  constructor(reason: string, options?: ErrorOptions) {
    super(`Cannot finish attempt: cancelled (${reason})`, options);
    this.name = "CancelledError";
  }
}

/** A technique failed for a reason worth reporting to the client. */
export class TechniqueError extends Error {
  /** Builds the error with a short, client-facing reason. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TechniqueError";
  }
}

/** The daemon cannot start (socket in use, bad permissions). */
export class StartupError extends Error {
  /** Builds the error with the reason. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StartupError";
  }
}
