//! `gateway send`: builds an event (by default the seed assets_update sample with a fresh
//! event_id and modify_time), encrypts and signs it exactly as Lark would for one app of the
//! config, POSTs it to the running gateway and prints the answer. For trying a deployment.

use std::path::PathBuf;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use lark_core::{crypto, Cipher};
use rand::Rng;

use crate::config::{App, Config};
use crate::store::sqlite::now_ms;

const SEED: &str = include_str!("../../../fixtures/assets_update_v1.json");

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// The webhook app (`[[apps]] name`) to send as; default: the first webhook app.
    #[arg(long)]
    pub app: Option<String>,
    /// The URL to POST to; default: this config's listen address and the app's path.
    #[arg(long)]
    pub url: Option<String>,
    /// A JSON file with the plaintext event; default: the built-in assets_update sample.
    #[arg(long)]
    pub event: Option<PathBuf>,
    /// Use this event_id instead of a fresh random one (to try deduplication).
    #[arg(long)]
    pub event_id: Option<String>,
    /// Send the file as is: no fresh event_id, modify_time or token.
    #[arg(long, conflicts_with = "event_id")]
    pub raw: bool,
}

/// Builds, signs and posts the event; returns the HTTP status.
pub async fn send(config: &Config, args: &SendArgs) -> anyhow::Result<u16> {
    let app = match &args.app {
        Some(name) => config
            .app_by_name(name)
            .with_context(|| format!("no app named {name:?} in {}", config.file.display()))?,
        None => config
            .apps
            .iter()
            .find(|a| a.webhook().is_some())
            .context("the config has no webhook app (`send` posts to a webhook app's path)")?,
    };
    let Some(webhook) = app.webhook() else {
        bail!(
            "app {:?} receives its events over the long connection (mode = \"websocket\"); \
             `send` posts to webhook apps only",
            app.name
        );
    };
    let text = match &args.event {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => SEED.to_owned(),
    };
    let plaintext = if args.raw {
        text
    } else {
        freshen(&text, app, args.event_id.as_deref())?
    };
    let event_id = serde_json::from_str::<serde_json::Value>(&plaintext)
        .ok()
        .and_then(|v| {
            v.pointer("/header/event_id")
                .or_else(|| v.pointer("/uuid"))
                .and_then(|id| id.as_str().map(str::to_owned))
        })
        .unwrap_or_default();

    let (body, signature) = match &webhook.encrypt_key {
        Some(key) => {
            let iv: [u8; 16] = rand::thread_rng().gen();
            let encrypt = Cipher::new(key).encrypt(plaintext.as_bytes(), &iv);
            let body = serde_json::json!({ "encrypt": encrypt }).to_string();
            let ts = (now_ms() / 1000).to_string();
            let nonce = rand::thread_rng()
                .gen_range(100_000_000u64..1_000_000_000)
                .to_string();
            let sig = crypto::sign(&ts, &nonce, key, body.as_bytes());
            (body, Some((ts, nonce, sig)))
        }
        None => (plaintext, None),
    };

    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}{}", webhook.path)
        }
    };
    let (status, answer) = post(&url, body, signature).await?;
    println!("event_id: {event_id}");
    println!("HTTP {status} {answer}");
    Ok(status)
}

/// Gives the sample a fresh identity and the app's token, as a new Lark push would have.
fn freshen(text: &str, app: &App, event_id: Option<&str>) -> anyhow::Result<String> {
    let mut v: serde_json::Value =
        serde_json::from_str(text).context("the event file is not JSON")?;
    let id = event_id.map(str::to_owned).unwrap_or_else(|| {
        let bytes: [u8; 16] = rand::thread_rng().gen();
        hex::encode(bytes)
    });
    let now = now_ms().to_string();
    if let Some(header) = v.get_mut("header").and_then(|h| h.as_object_mut()) {
        header.insert("event_id".into(), id.into());
        header.insert("create_time".into(), now.clone().into());
        if let Some(token) = &app.verification_token {
            header.insert("token".into(), token.clone().into());
        }
        if let Some(app_id) = &app.app_id {
            header.insert("app_id".into(), app_id.clone().into());
        }
    } else if v.get("uuid").is_some() {
        v["uuid"] = id.into();
        if let Some(token) = &app.verification_token {
            v["token"] = token.clone().into();
        }
    } else {
        bail!(
            "the event is neither schema 2.0 (header) nor 1.0 (uuid); use --raw to send it as is"
        );
    }
    if let Some(event) = v.get_mut("event").and_then(|e| e.as_object_mut()) {
        if event.contains_key("modify_time") {
            event.insert("modify_time".into(), now.into());
        }
    }
    Ok(v.to_string())
}

async fn post(
    url: &str,
    body: String,
    signature: Option<(String, String, String)>,
) -> anyhow::Result<(u16, String)> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported by `gateway send` (got {url:?})");
    }
    let host = uri.host().context("URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    // An IPv6 literal comes bracketed (`[::1]`): the socket wants the bare address.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .with_context(|| format!("connecting to {host}:{port} (is the gateway running?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        );
    if let Some((ts, nonce, sig)) = signature {
        req = req
            .header("X-Lark-Request-Timestamp", ts)
            .header("X-Lark-Request-Nonce", nonce)
            .header("X-Lark-Signature", sig);
    }
    let res = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
