//! Phase one: the TOML as written. `deny_unknown_fields` everywhere, so a typo is an error with
//! its line and column instead of a silently ignored setting. Strings stay unexpanded here.
//! The same types give `gateway config schema` its JSON Schema (schemars: doc comments become
//! descriptions, `deny_unknown_fields` becomes `additionalProperties: false`).
//! A key holding a secret (an app's `verification_token`, `encrypt_key` and `app_secret`,
//! `[admin] token`, `[store] url` with its password) is read by [`secret`]: written as anything
//! but a string, it is refused without the value (serde's own message quotes it).

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub apps: Vec<RawApp>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub delivery: RawDelivery,
    /// Where `[[plugins]] library = "name"` is looked up. Not `[plugins] dir`: TOML cannot
    /// hold a `[plugins]` table and `[[plugins]]` array entries in one file.
    #[serde(default)]
    pub libraries: RawLibraries,
    #[serde(default)]
    pub plugins: Vec<RawPlugin>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    /// How long in-flight requests and plugin calls get to finish on shutdown.
    pub shutdown_grace: Option<String>,
    /// How long a client may take to send a request body.
    pub body_timeout: Option<String>,
    /// Open webhook connections at most; a new one past the limit is closed at once (the client
    /// retries). Changes only on restart.
    pub max_connections: Option<u32>,
    /// Open webhook connections one client (an IPv4 address, an IPv6 /64) may hold at most
    /// (none: no limit per client). Changes only on restart.
    pub max_connections_per_client: Option<u32>,
    /// Async worker threads (default: the CPUs less one, at least 1).
    pub workers: Option<u32>,
    /// Proxy addresses whose `X-Forwarded-For` names the client in logs.
    pub trusted_proxies: Option<Vec<String>>,
    /// Serve HTTPS on `listen` with this certificate pair (none: plain HTTP, e.g. behind a
    /// proxy that terminates TLS).
    pub tls: Option<RawTls>,
}

/// `[server] tls = { cert = "fullchain.pem", key = "privkey.pem" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first (certbot's `fullchain.pem`).
    pub cert: String,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1; certbot's `privkey.pem`).
    pub key: String,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `"127.0.0.1:9464"` by default; `"off"` disables the admin listener.
    pub listen: Option<String>,
    /// The token the API and console ask for (`${VAR}` from the environment); required when
    /// `listen` is not a loopback address.
    #[serde(default, deserialize_with = "admin_token")]
    #[schemars(with = "Option<String>")]
    pub token: Option<String>,
    /// Serve the admin listener (API, console, metrics) over HTTPS with this pair, as
    /// `[server] tls`.
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub name: String,
    /// `"webhook"` (the default) or `"websocket"`.
    pub mode: Option<String>,
    /// Webhook apps: the request path.
    pub path: Option<String>,
    #[serde(default, deserialize_with = "verification_token")]
    #[schemars(with = "Option<String>")]
    pub verification_token: Option<String>,
    /// Webhook apps only.
    #[serde(default, deserialize_with = "encrypt_key")]
    #[schemars(with = "Option<String>")]
    pub encrypt_key: Option<String>,
    /// Webhook apps: optional pin; websocket apps: the credentials' id (required).
    pub app_id: Option<String>,
    /// Websocket apps only (required).
    #[serde(default, deserialize_with = "app_secret")]
    #[schemars(with = "Option<String>")]
    pub app_secret: Option<String>,
    /// Websocket apps only: the Open Platform base URL.
    pub domain: Option<String>,
    /// Webhook apps only.
    pub max_clock_skew: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<String>,
    /// A PostgreSQL database instead of the embedded file. A host that is a Unix-socket
    /// folder (`%2Frun%2Fpostgresql`, `?host=/run/postgresql`) is reached without TLS.
    #[serde(default, deserialize_with = "store_url")]
    #[schemars(with = "Option<String>")]
    pub url: Option<String>,
    pub lease: Option<String>,
    pub pool_size: Option<u32>,
    pub ca_file: Option<String>,
    pub retention: Option<String>,
    /// How long a dead letter is kept (separate from the dedup retention).
    pub dead_letter_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub max_attempts: Option<u32>,
    /// Give up on a delivery once its event is this old (optional).
    pub max_age: Option<String>,
    pub initial_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub timeout: Option<String>,
    /// Pending deliveries of a plugin instance no longer configured become dead letters after
    /// this long.
    pub removed_plugin_grace: Option<String>,
    /// The most ready deliveries handed to one plugin call.
    pub max_batch: Option<u32>,
    /// While another call of the same plugin runs, how long a new call waits for `max_batch`
    /// ready deliveries ("0ms": never); at most 1s.
    pub linger: Option<String>,
    /// Attempts during which the gateway died before a delivery is dead-lettered.
    pub max_crashes: Option<u32>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLibraries {
    /// A folder of plugin libraries (`gateway plugins list` shows them; `library = "name"`
    /// resolves to `<dir>/lib<name>.so` or `<dir>/<name>.so`).
    pub dir: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    pub name: String,
    /// A path, or a bare name (no `/`, no `.so`) looked up in `[libraries] dir`.
    pub library: String,
    /// The library file's SHA-256 (64 hex digits): anything else is refused before loading.
    pub sha256: Option<String>,
    /// The plugin's own settings (see its README), handed to its `init` as JSON.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub config: Option<toml::Table>,
    /// Concurrent calls of this instance (default 4): 1 to 1024, and every entry's together at
    /// most 1024 (each call holds one of the gateway's threads until it returns).
    pub max_concurrency: Option<u32>,
    /// `"none"` (default) or `"process"`.
    pub isolation: Option<String>,
    /// How long the instance's `init` may take at a start, reload or restart (default `60s`).
    pub init_timeout: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub events: Vec<String>,
    pub plugins: Vec<String>,
    pub apps: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A tracing filter such as `"info"` or `"gateway=debug"`; `RUST_LOG` wins when set.
    pub level: Option<String>,
}

/// A secret key's value: a string, or an error naming the key `shown` but never the value (serde's
/// own wrong-type message would quote a number or a boolean written where the string belongs).
fn secret<'de, D: Deserializer<'de>>(
    d: D,
    shown: &'static str,
) -> Result<Option<String>, D::Error> {
    struct Secret(&'static str);
    impl Secret {
        fn refused<E: de::Error>(&self) -> E {
            E::custom(format!(
                "{} must be a string in quotes (the value is not shown: it is a secret)",
                self.0
            ))
        }
    }
    impl<'de> Visitor<'de> for Secret {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} as a string", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_char<E: de::Error>(self, _: char) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<String, E> {
            Err(self.refused())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            Err(self.refused())
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
            Err(self.refused())
        }
    }
    d.deserialize_string(Secret(shown)).map(Some)
}

fn verification_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret(d, "`verification_token`")
}

fn encrypt_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret(d, "`encrypt_key`")
}

fn app_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret(d, "`app_secret`")
}

fn admin_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret(d, "[admin] `token`")
}

fn store_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    secret(d, "[store] `url`")
}

#[cfg(test)]
mod tests {
    use serde::de::value::{
        BoolDeserializer, BytesDeserializer, CharDeserializer, Error, I128Deserializer,
        I64Deserializer, MapDeserializer, StrDeserializer, StringDeserializer, U128Deserializer,
        U64Deserializer, UnitDeserializer,
    };
    use serde::de::IntoDeserializer;

    use super::secret;

    const REFUSED: &str = "`k` must be a string in quotes (the value is not shown: it is a secret)";

    /// Whatever a deserializer hands a secret key, a string is taken as written and anything
    /// else refused without its value (TOML gives strings, integers, floats, booleans, arrays
    /// and tables; the other kinds are refused alike should another format ever feed it).
    #[test]
    fn a_secret_is_a_string_and_nothing_else_is_shown() {
        let taken = |r: Result<Option<String>, Error>| r.expect("a string");
        assert_eq!(
            taken(secret(StrDeserializer::<Error>::new("s3cr3t"), "`k`")),
            Some("s3cr3t".into())
        );
        assert_eq!(
            taken(secret(
                StringDeserializer::<Error>::new("s3cr3t".into()),
                "`k`"
            )),
            Some("s3cr3t".into())
        );
        let map: std::collections::BTreeMap<&str, &str> = [("s3cr3t", "s3cr3t")].into();
        let refusals = [
            secret(BoolDeserializer::<Error>::new(true), "`k`"),
            secret(I64Deserializer::<Error>::new(-7_770_001), "`k`"),
            secret(U64Deserializer::<Error>::new(7_770_001), "`k`"),
            secret(I128Deserializer::<Error>::new(-7_770_001), "`k`"),
            secret(U128Deserializer::<Error>::new(7_770_001), "`k`"),
            secret(CharDeserializer::<Error>::new('§'), "`k`"),
            secret(BytesDeserializer::<Error>::new(b"s3cr3t"), "`k`"),
            secret(MapDeserializer::<_, Error>::new(map.into_iter()), "`k`"),
            secret(vec![1u8].into_deserializer(), "`k`"),
            secret(1.5f64.into_deserializer(), "`k`"),
        ];
        for (i, r) in refusals.into_iter().enumerate() {
            assert_eq!(r.map_err(|e| e.to_string()), Err(REFUSED.into()), "#{i}");
        }
        // A kind with no refusal of its own says what the key expects.
        let unit = secret(UnitDeserializer::<Error>::new(), "`k`").map_err(|e| e.to_string());
        assert_eq!(
            unit,
            Err("invalid type: unit value, expected `k` as a string".into())
        );
    }
}
