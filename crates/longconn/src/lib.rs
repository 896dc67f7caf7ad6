//! The Lark/Feishu long-connection (WebSocket) protocol, as pure types and functions (spec §11).
//!
//! In this mode the gateway dials out to Lark instead of being pushed to, so it needs no public
//! address, no TLS certificate and no decryption. This crate holds what both ends of that
//! connection must agree on, so the gateway's client and the tests' stand-in server share one
//! definition:
//!
//! - [`frame`]: the protobuf [`Frame`] every WebSocket message carries (ping, pong, data, ack).
//! - [`fragments`]: reassembly of a data message split across several frames, bounded in entries,
//!   bytes and time.
//! - [`client_config`]: the connection parameters Lark hands out (`PingInterval`, reconnect
//!   policy) and the rules for applying updates carried by pongs.
//! - [`bootstrap`]: the `POST {domain}/callback/ws/endpoint` exchange, the classification of its
//!   codes and of handshake refusals (retry or fatal), and the URL helpers (`service_id`, a
//!   redacted form for logs: the URL carries credentials).
//!
//! Invariant: no I/O, no async, no logging, no panic on input. Time is passed in by the caller.

pub mod bootstrap;
pub mod client_config;
pub mod fragments;
pub mod frame;

pub use bootstrap::{BootstrapError, Endpoint, HandshakeVerdict};
pub use client_config::{Applied, Clamped, ClientConfig, ClientConfigUpdate};
pub use fragments::{DropReason, Dropped, FragmentError, Reassembler};
pub use frame::{Frame, FrameError, Header, MessageType, Method};
