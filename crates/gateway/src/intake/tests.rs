//! The one ingest path on its own (a real embedded store and engine, no listener): the body
//! bound at its edge, the `app_id` pin, and routes swapped whole.

use std::sync::Arc;

use super::*;
use crate::config::Config;

const LIMIT: usize = 2048;

async fn intake(dir: &std::path::Path) -> (Intake, Config) {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nmax_body_bytes = {LIMIT}\n\
             [[apps]]\nname = \"ws\"\nmode = \"websocket\"\napp_id = \"cli_pinned\"\n\
             app_secret = \"s\"\nverification_token = \"tok\"\n"
        ),
    )
    .expect("config");
    let config = Config::load(&path).expect("valid");
    let store = crate::store::open(&config.store, false)
        .await
        .expect("store");
    let engine = Engine::start(store.clone(), Default::default(), config.delivery);
    (
        Intake::new(Routes::from_config(&config), store, engine),
        config,
    )
}

/// A schema 2.0 event of `app_id` (none: no `app_id` in its header), padded with spaces to
/// `len` bytes (0: not padded).
fn event(id: &str, app_id: Option<&str>, len: usize) -> Vec<u8> {
    let app = app_id.map_or(String::new(), |a| format!(",\"app_id\":\"{a}\""));
    let mut body = format!(
        "{{\"schema\":\"2.0\",\"header\":{{\"event_id\":\"{id}\",\"token\":\"tok\",\
         \"create_time\":\"1700000000000\",\"event_type\":\"hire.referral_account.assets_update_v1\",\
         \"tenant_key\":\"t\"{app}}},\"event\":{{}}}}"
    )
    .into_bytes();
    if len > 0 {
        assert!(body.len() <= len, "{} > {len}", body.len());
        body.resize(len, b' ');
    }
    body
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_taken_and_one_byte_more_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, _config) = intake(dir.path()).await;
    let at_limit = event("ev-at-limit", Some("cli_pinned"), LIMIT);
    assert_eq!(intake.payload("ws", &at_limit).await, Ok(Stored::New));
    assert_eq!(intake.payload("ws", &at_limit).await, Ok(Stored::Duplicate));
    let over = event("ev-over", Some("cli_pinned"), LIMIT + 1);
    assert_eq!(
        intake.payload("ws", &over).await,
        Err(Rejection::TooLarge { limit: LIMIT })
    );
    assert_eq!(
        intake.payload("nobody", &at_limit).await,
        Err(Rejection::NotFound)
    );
}

#[tokio::test]
async fn a_pinned_app_takes_only_its_own_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, _config) = intake(dir.path()).await;
    let mine = event("ev-mine", Some("cli_pinned"), 0);
    assert_eq!(intake.payload("ws", &mine).await, Ok(Stored::New));
    let other = event("ev-other", Some("cli_other"), 0);
    assert_eq!(
        intake.payload("ws", &other).await,
        Err(Rejection::AppIdMismatch)
    );
    let unnamed = event("ev-unnamed", None, 0);
    assert_eq!(
        intake.payload("ws", &unnamed).await,
        Err(Rejection::AppIdMissing)
    );
    // Schema 1.0 names its app in `event.app_id`, and may not: checked only when it does.
    let v1 = |uuid: &str, app: &str| {
        format!(
            "{{\"uuid\":\"{uuid}\",\"token\":\"tok\",\"ts\":\"1700000000\",\
             \"type\":\"event_callback\",\"event\":{{\"type\":\"t\"{app}}}}}"
        )
    };
    let quiet = v1("u-quiet", "");
    assert_eq!(
        intake.payload("ws", quiet.as_bytes()).await,
        Ok(Stored::New)
    );
    let mine = v1("u-mine", ",\"app_id\":\"cli_pinned\"");
    assert_eq!(intake.payload("ws", mine.as_bytes()).await, Ok(Stored::New));
    let other = v1("u-other", ",\"app_id\":\"cli_other\"");
    assert_eq!(
        intake.payload("ws", other.as_bytes()).await,
        Err(Rejection::AppIdMismatch)
    );
}

#[tokio::test]
async fn routes_are_swapped_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, config) = intake(dir.path()).await;
    assert_eq!(format!("{intake:?}"), "Intake { .. }");
    let before = intake.routes().expect("routes");
    assert_eq!(before.max_body_bytes, LIMIT);
    let mut wider = Routes::from_config(&config);
    wider.max_body_bytes = 4 * LIMIT;
    intake.swap_routes(wider);
    assert_eq!(intake.routes().expect("routes").max_body_bytes, 4 * LIMIT);
    let big = event("ev-big", Some("cli_pinned"), 2 * LIMIT);
    assert_eq!(intake.payload("ws", &big).await, Ok(Stored::New));
    assert!(Arc::strong_count(&before) == 1, "the old routes are let go");
}

/// The verification token (spec §4): checked before anything is stored.
#[tokio::test]
async fn an_event_without_the_apps_token_is_refused_and_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (intake, _config) = intake(dir.path()).await;
    let with_token = |id: &str, token: &str| {
        String::from_utf8(event(id, Some("cli_pinned"), 0))
            .expect("utf-8")
            .replace("\"token\":\"tok\"", token)
    };
    let wrong = with_token("ev-wrong", "\"token\":\"tol\"");
    assert_eq!(
        intake.payload("ws", wrong.as_bytes()).await,
        Err(Rejection::BadToken)
    );
    let none = with_token("ev-none", "\"token\":null");
    assert_eq!(
        intake.payload("ws", none.as_bytes()).await,
        Err(Rejection::MissingToken)
    );
    // Refused, not stored: the same event with its token is new.
    let right = with_token("ev-wrong", "\"token\":\"tok\"");
    assert_eq!(
        intake.payload("ws", right.as_bytes()).await,
        Ok(Stored::New)
    );
}

/// An app without a verification token takes events with any token or none.
#[test]
fn without_a_configured_token_any_is_taken() {
    let config_dir = tempfile::tempdir().expect("tempdir");
    let path = config_dir.path().join("gateway.toml");
    std::fs::write(&path, "[[apps]]\nname = \"hook\"\npath = \"/hook\"\n").expect("config");
    let config = Config::load(&path).expect("valid");
    let app = &config.apps[0];
    assert_eq!(check_token(app, None), Ok(()));
    assert_eq!(check_token(app, Some("anything")), Ok(()));
}
