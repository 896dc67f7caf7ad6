//! What an operator sees and does. One submodule per topic of this target: `commands` (commands
//! that refuse to guess: a store that is not there, a name that exists nowhere; exit codes; a
//! closed output pipe; listings with filters; `check` as a dry run), `replay` (a replay that would
//! re-run a success, the `--dry-run` / `--force` of `replay`, dead letters kept until purged on
//! purpose) and `observability` (metrics, JSON logs, refused requests logged and rate-limited,
//! oversized request heads); `helpers` holds what they share.

#[path = "operator/helpers.rs"]
mod helpers;

#[path = "operator/commands.rs"]
mod commands;

#[path = "operator/replay.rs"]
mod replay;

#[path = "operator/observability.rs"]
mod observability;
