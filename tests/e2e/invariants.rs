//! The delivery engine keeps ARCHITECTURE.md's invariants under store write failures, timed-out
//! calls, replays and reloads (issue 10). Each test is named after what broke. One submodule per
//! topic of this target: `calls` (an outcome the store could not record, timed-out calls that
//! succeed late, replays while a call runs or a retry timer waits, a full queue, a huge outcome
//! detail) and `reloads` (a changed or hung instance replaced, a body arriving across a reload,
//! removed instances and their orphaned deliveries); `helpers` holds what they share.

#[path = "invariants/helpers.rs"]
mod helpers;

#[path = "invariants/calls.rs"]
mod calls;

#[path = "invariants/reloads.rs"]
mod reloads;

#[path = "invariants/reload_edges.rs"]
mod reload_edges;
