//! The SDK's side of the ABI on its own: a `Host` kept past its instance stops calling the host
//! once `shutdown` (or a failed `init`) returns, and a delivery's JSON is parsed, or refused with
//! the reason.

use super::parse_delivery;
use super::*;
use std::sync::Mutex;

/// What reached the host's `log` callback.
static HOST_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The `Host` the plugin kept past its instance.
static KEPT: Mutex<Option<Host>> = Mutex::new(None);

unsafe extern "C" fn host_log(_ctx: *const c_void, _level: u32, message: GwStr) {
    // SAFETY: borrowed for the call.
    let text = String::from_utf8_lossy(unsafe { bytes(message) }).into_owned();
    HOST_LINES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(text);
}

struct Keeper;

impl Plugin for Keeper {
    fn new(config: serde_json::Value, host: Host) -> Result<Self, String> {
        host.log(Level::Info, "new");
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some(host);
        if config["fail"] == true {
            return Err("refused".into());
        }
        Ok(Keeper)
    }

    fn handle(&self, _delivery: &Delivery) -> Outcome {
        Outcome::Ok
    }
}

fn kept_host_logs(message: &str) {
    let host = KEPT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    host.expect("kept").log(Level::Warn, message);
}

/// The SDK on its own, against a host that frees its table once `shutdown` (or a failed
/// `init`) returns, as the ABI allows: a `Host` kept past that logs nothing.
#[test]
fn a_kept_host_stops_calling_the_host_once_shutdown_or_a_failed_init_returns() {
    let api = HostApi {
        api_major: abi::ABI_MAJOR,
        api_minor: abi::ABI_MINOR,
        struct_size: abi::HOST_API_SIZE,
        ctx: std::ptr::null(),
        log: host_log,
        config_dir: GwStr {
            ptr: b"/etc".as_ptr(),
            len: 4,
        },
        instance_name: GwStr {
            ptr: b"kept".as_ptr(),
            len: 4,
        },
    };
    let run_init = |config: &[u8]| {
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut error = GwBuf::EMPTY;
        let config = GwStr {
            ptr: config.as_ptr(),
            len: config.len(),
        };
        // SAFETY: a valid table and out-pointers, alive for the call.
        let code = unsafe { init::<Keeper>(config, &api, &mut instance, &mut error) };
        // SAFETY: our own buffer, freed once.
        unsafe { free_buf(error) };
        (code, instance)
    };
    let (code, instance) = run_init(b"{}");
    assert_eq!(code, abi::INIT_OK);
    kept_host_logs("alive");
    // SAFETY: the instance `init` returned, shut down once.
    unsafe { shutdown::<Keeper>(instance) };
    kept_host_logs("after shutdown");
    let (code, _) = run_init(br#"{"fail":true}"#);
    assert_eq!(code, abi::INIT_ERROR);
    kept_host_logs("after a failed init");
    let lines = HOST_LINES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(lines, ["new", "alive", "new"]);
}

#[test]
fn a_delivery_is_parsed_and_a_malformed_one_is_said_why() {
    let good = br#"{"delivery_id":"e:p","attempt":1,"plugin":"p","app":"a","event_id":"e","event_type":"t","received_at":5,"event":{"k":"\u00e9"}}"#;
    let d = parse_delivery(good).expect("parses");
    assert_eq!(
        (d.delivery_id.as_str(), d.event_json()),
        ("e:p", r#"{"k":"\u00e9"}"#)
    );
    let mut bad = good.to_vec();
    bad[20] = 0xff;
    let e = parse_delivery(&bad).expect_err("not UTF-8");
    assert!(
        e.starts_with("malformed delivery from host: not UTF-8"),
        "{e}"
    );
    let e = parse_delivery(br#"{"delivery_id":1}"#).expect_err("wrong shape");
    assert!(
        e.starts_with("malformed delivery from host: invalid type"),
        "{e}"
    );
}
