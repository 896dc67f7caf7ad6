//! The long-connection (websocket) mode end to end: the real gateway binary dials a stand-in of
//! Lark's long-connection server (`standins/lark_ws.rs`, plain ws on loopback), events reach real
//! plugins, and every ack is checked against what the store holds. One submodule per topic of
//! this target: `acks` (what a pushed message becomes: stored and acked 200, refusals acked 500,
//! fragments, duplicates, a locked store, kill -9, a webhook app beside it), `reconnect` (pings,
//! reconnects and their budget, a silent connection, fatal codes), `lifecycle` (shutdown and
//! reload), `handover` (a reload's handover in time: per app, and the replaced client's acks),
//! `flow` (backpressure, a new `max_body_bytes`) and `check` (`check --connect`); `helpers`
//! holds what they share.

#[path = "../standins/lark_ws.rs"]
mod lark_ws;

#[path = "longconn/helpers.rs"]
mod helpers;

#[path = "longconn/acks.rs"]
mod acks;

#[path = "longconn/reconnect.rs"]
mod reconnect;

#[path = "longconn/lifecycle.rs"]
mod lifecycle;

#[path = "longconn/handover.rs"]
mod handover;

#[path = "longconn/flow.rs"]
mod flow;

#[path = "longconn/check.rs"]
mod check;

#[path = "longconn/stalled_peer.rs"]
mod stalled_peer;
