/**
 * The one import site of the assertion library (`node:assert/strict` while
 * JSR's `@std/assert` cannot be reached; switching is a change to this file).
 *
 * @module
 */

export {
  deepEqual as assertEquals,
  equal as assertStrictEquals,
  match as assertMatch,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
