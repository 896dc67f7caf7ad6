//! `payout`: a gateway plugin that withdraws a referral account's whole bonus balance through the
//! Lark Open API when a `hire.referral_account.assets_update_v1` event arrives — exactly once in
//! effect per delivery — keeps a ledger (its own SQLite file, or a PostgreSQL database shared by
//! several gateway replicas) and optionally forwards every withdrawal to the company's payment
//! platform.
//!
//! Modules: [`config`] (the `[[plugins]] config` table), [`api`] (Lark client: token, withdraw,
//! reconciliation), [`ledger`] (SQLite or PostgreSQL), [`forward`] (payment platform),
//! [`plugin`] (the [`Payout`] plugin itself), [`report`] and [`timefmt`] (used by the
//! `payout-report` CLI).
//! See `README.md` for the configuration reference, the ledger schema and the CLI.

pub mod api;
pub mod config;
pub mod forward;
pub mod ledger;
mod owners;
pub mod plugin;
pub mod report;
mod shown;
pub mod timefmt;

pub use plugin::{external_order_id, Payout};

gateway_plugin::export_plugin!(Payout);
