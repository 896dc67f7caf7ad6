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

/// A panic payload whose own `Drop` panics: `panic_any(PanicOnDrop)`.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("the payload panicked as it was dropped");
    }
}

/// A plugin that panics with [`PanicOnDrop`] in every entry it has (`new` when its config says
/// so, `handle`, `handle_batch`, `shutdown`).
struct Bomb;

impl Plugin for Bomb {
    fn new(config: serde_json::Value, _host: Host) -> Result<Self, String> {
        if config["panic_in_new"] == true {
            std::panic::panic_any(PanicOnDrop);
        }
        Ok(Bomb)
    }

    fn handle(&self, _delivery: &Delivery) -> Outcome {
        std::panic::panic_any(PanicOnDrop)
    }

    fn handle_batch(&self, _deliveries: &[Delivery]) -> Vec<Outcome> {
        std::panic::panic_any(PanicOnDrop)
    }

    fn shutdown(&self) {
        std::panic::panic_any(PanicOnDrop)
    }
}

unsafe extern "C" fn quiet_log(_: *const c_void, _: u32, _: GwStr) {}

/// Runs every entry of [`Bomb`] through the ABI, as a host would.
fn run_the_bomb() {
    let api = HostApi {
        api_major: abi::ABI_MAJOR,
        api_minor: abi::ABI_MINOR,
        struct_size: abi::HOST_API_SIZE,
        ctx: std::ptr::null(),
        log: quiet_log,
        config_dir: GwStr {
            ptr: b"/etc".as_ptr(),
            len: 4,
        },
        instance_name: GwStr {
            ptr: b"bomb".as_ptr(),
            len: 4,
        },
    };
    let str_of = |b: &[u8]| GwStr {
        ptr: b.as_ptr(),
        len: b.len(),
    };
    let mut instance: *mut c_void = std::ptr::null_mut();
    let mut error = GwBuf::EMPTY;
    // SAFETY: a valid table and out-pointers, alive for the call.
    let code = unsafe {
        init::<Bomb>(
            str_of(br#"{"panic_in_new":true}"#),
            &api,
            &mut instance,
            &mut error,
        )
    };
    assert_eq!(code, abi::INIT_PANICKED);
    // SAFETY: our own buffer, freed once.
    unsafe { free_buf(std::mem::replace(&mut error, GwBuf::EMPTY)) };
    // SAFETY: as above.
    let code = unsafe { init::<Bomb>(str_of(b"{}"), &api, &mut instance, &mut error) };
    assert_eq!(code, abi::INIT_OK);
    let delivery = br#"{"delivery_id":"e:p","attempt":1,"plugin":"p","app":"a","event_id":"e","event_type":"t","received_at":5,"event":{}}"#;
    let mut detail = GwBuf::EMPTY;
    // SAFETY: the instance `init` returned; a borrowed delivery and a valid out-pointer.
    let code = unsafe { handle::<Bomb>(instance, str_of(delivery), &mut detail) };
    assert_eq!(code, abi::OUTCOME_PANICKED);
    // SAFETY: our own buffer, freed once.
    unsafe { free_buf(detail) };
    let inputs = [str_of(delivery), str_of(delivery)];
    let mut codes = [abi::OUTCOME_RETRY; 2];
    let mut details = [GwBuf::EMPTY, GwBuf::EMPTY];
    // SAFETY: two inputs and two slots of each kind, alive for the call.
    let code = unsafe {
        handle_batch::<Bomb>(
            instance,
            inputs.as_ptr(),
            2,
            codes.as_mut_ptr(),
            details.as_mut_ptr(),
        )
    };
    assert_eq!(code, abi::OUTCOME_PANICKED);
    for d in details {
        // SAFETY: our own buffers, freed once.
        unsafe { free_buf(d) };
    }
    // SAFETY: the instance `init` returned, shut down once.
    unsafe { shutdown::<Bomb>(instance) };
}

/// Regression: a panic payload was dropped after `catch_unwind` returned, outside it: a
/// payload whose `Drop` panics unwound out of the `extern "C"` entry, which aborts the
/// process (the whole gateway, in process). Run in a child process of this test binary, since
/// what failed was an abort.
#[test]
fn a_panic_payload_that_panics_as_it_is_dropped_never_leaves_an_entry() {
    const CHILD: &str = "GATEWAY_PLUGIN_TEST_BOMB_CHILD";
    if std::env::var_os(CHILD).is_some() {
        run_the_bomb();
        println!("the bomb ran through");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "export::tests::a_panic_payload_that_panics_as_it_is_dropped_never_leaves_an_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("the bomb ran through"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The descriptor's strings are read by the host up to their NUL: one without is refused
/// where it is built (at compile time in the export macro's `static`), never read past.
#[test]
#[should_panic(expected = "must end in a NUL")]
fn a_descriptor_string_without_its_nul_is_refused() {
    let _ = descriptor::<Keeper>("keeper", "0.1.0\0");
}

#[test]
fn a_descriptor_with_nul_terminated_strings_is_built() {
    let d = descriptor::<Keeper>("keeper\0", "0.1.0\0");
    assert_eq!(d.abi_major, abi::ABI_MAJOR);
}

/// The build tag says `panic=unwind` only when the plugin's crate unwinds too (the macro passes
/// its own `cfg!`): a library linked to abort over this SDK is never reported as containing its
/// panics.
#[test]
fn the_build_tag_follows_the_plugin_crates_panic_strategy() {
    let tag = |unwinds| {
        let d = descriptor_linked::<Keeper>("keeper\0", "0.1.0\0", unwinds);
        // SAFETY: the tag is one of this module's NUL-terminated constants.
        unsafe { std::ffi::CStr::from_ptr(d.build_tag) }
            .to_string_lossy()
            .into_owned()
    };
    assert!(tag(false).ends_with("; panic=abort"), "{}", tag(false));
    assert!(tag(true).ends_with("; panic=unwind"), "{}", tag(true));
}
