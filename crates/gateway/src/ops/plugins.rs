//! `gateway plugins ...`: plugin libraries seen the way the gateway sees them, without a server
//! or a store. `inspect` reads one library's descriptor, `list` every library of a folder
//! (`[libraries] dir`), `call` runs one library end to end: `init` with a config file, one
//! delivery built exactly as the engine builds it ([`crate::delivery::payload`]) from an event
//! file, `handle` (or a batch of several: `handle_batch`), `shutdown`.
//!
//! Nothing here opens the store, binds a socket or reads the gateway's routes. `inspect` and
//! `list` never load a library in this process: a short-lived child (`gateway plugin-host`, as
//! `gateway check` uses for isolated plugins) loads it, so only that child runs its load-time
//! code, and reports the descriptor; nothing beyond the descriptor is called. `call` loads the
//! library here, as an in-process instance would be.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gateway_plugin::host::{
    CallOutcome, DescriptorSummary, InitError, Instance, Library, LibraryFile,
};
use lark_core::envelope::Envelope;

use super::out::outln;
use crate::config::{load_plugin_config, Config, ConfigError};
use crate::delivery::payload::Payload;
use crate::plugins::file_sha256;

/// `plugins call`: the plugin asked for a retry.
pub const EXIT_RETRY: u8 = 5;
/// `plugins call`: the plugin rejected the delivery.
pub const EXIT_REJECT: u8 = 6;
/// `plugins call`: the plugin panicked in `handle`.
pub const EXIT_PANICKED: u8 = 7;
/// The delivery's `app` when `--app` is not given.
const DEFAULT_APP: &str = "plugins-call";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PluginsCommand {
    /// Show a library's descriptor without calling it: name, version, ABI, build tag, whether
    /// it exports the batch entry, whether its crashes are contained, its sha256.
    Inspect { library: PathBuf },
    /// Show every `*.so` of the config's `[libraries] dir` (or of --dir) as `inspect` does;
    /// files that are not plugins are listed with the reason.
    List {
        /// The folder to list instead of the config's `[libraries] dir` (then no config is
        /// read).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Try a plugin without a server: `init` with the --config file, one `handle` of the event
    /// (several --event: one `handle_batch` of them all, as the engine hands a batch),
    /// `shutdown`; prints each outcome. Exit 0 all ok, else the first other outcome's: 5 retry,
    /// 6 reject, 7 panicked (or the batch entry failed as a whole).
    #[command(
        after_help = "--config here is the plugin's own config, and only a file given \
        on the command line counts: the [env: GATEWAY_CONFIG] and [default: gateway.toml] \
        shown above are the gateway's config, which this command never reads (without \
        --config the plugin gets {})."
    )]
    Call(CallArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    /// The plugin library (a path).
    pub library: PathBuf,
    /// The event: a plaintext (decrypted) Lark envelope, schema 2.0 or 1.0, as in
    /// fixtures/assets_update_v1.json. The plugin's config is the global --config FILE: a .toml
    /// file with the keys of its `[[plugins]] config` table or a .json file with the JSON
    /// object; without it, `{}`. Given more than once, the deliveries of all the events (their
    /// ids distinct) go to the plugin in one batch, in order: its batch entry, or `handle` for
    /// each when it has none.
    #[arg(long, required = true)]
    pub event: Vec<PathBuf>,
    /// The delivery's `app` (an `[[apps]] name`).
    #[arg(long, default_value = DEFAULT_APP)]
    pub app: String,
    /// The instance name (the delivery's `plugin`, part of its `delivery_id`); default: the
    /// library's own name.
    #[arg(long)]
    pub instance: Option<String>,
    /// Also print the delivery JSON handed to `handle`.
    #[arg(long)]
    pub show_delivery: bool,
}

/// `gateway plugins ...`. `config` is the global --config and whether it was given on the
/// command line (not a default or `$GATEWAY_CONFIG`): for `call` it is the plugin's config.
pub fn plugins(cmd: &PluginsCommand, config: &Path, config_given: bool) -> ExitCode {
    match cmd {
        PluginsCommand::Inspect { library } => inspect(library),
        PluginsCommand::List { dir } => list(dir.as_deref(), config),
        PluginsCommand::Call(args) => call(args, config_given.then_some(config)),
    }
}

fn inspect(library: &Path) -> ExitCode {
    let (d, sha256) = match look(library) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    outln!("library   {}", library.display());
    describe(&d, &sha256, "");
    ExitCode::SUCCESS
}

/// Opens and hashes `library`, and has a child process load that file and report its
/// descriptor: (descriptor, the file's SHA-256). The error is the loader's message.
fn look(library: &Path) -> Result<(DescriptorSummary, String), String> {
    let file = LibraryFile::open(library).map_err(|e| e.to_string())?;
    let sha256 = file.sha256().to_owned();
    drop(file);
    let d = crate::isolation::describe::describe(library, &sha256, false)?;
    Ok((d, sha256))
}

/// The descriptor lines of `inspect`, each prefixed with `indent`.
fn describe(d: &DescriptorSummary, sha256: &str, indent: &str) {
    outln!("{indent}name      {}", d.name);
    outln!("{indent}version   {}", d.version);
    outln!(
        "{indent}abi       {}.{} (descriptor {} bytes)",
        gateway_plugin::abi::ABI_MAJOR,
        d.abi_minor,
        d.struct_size
    );
    outln!(
        "{indent}batch     {}",
        if d.batch_entry {
            "yes (handle_batch)"
        } else {
            "no (the host calls handle once per delivery)"
        }
    );
    outln!("{indent}build     {}", d.build_tag);
    outln!(
        "{indent}crashes   {}",
        if super::check::crash_contained(&d.build_tag) {
            "panics contained (Rust SDK, panic = \"unwind\")"
        } else {
            "not contained: a crash ends the gateway unless isolation = \"process\""
        }
    );
    outln!("{indent}sha256    {sha256}");
}

fn sha256_line(path: &Path) -> String {
    file_sha256(path).unwrap_or_else(|e| format!("(cannot read the file: {e})"))
}

/// `plugins list`: every `*.so` of the folder, sorted by file name.
fn list(dir: Option<&Path>, config_file: &Path) -> ExitCode {
    let (dir, config) = match dir {
        Some(d) => (d.to_path_buf(), None),
        None => {
            // A config with problems (a `library` name that resolves nowhere, say) still names
            // its folder: listing it is how one fixes the config.
            let (found, config) = match Config::load(config_file) {
                Ok(config) => (config.library_dir.clone(), Some(config)),
                Err(invalid @ ConfigError::Invalid { .. }) => {
                    match Config::library_dir_of(config_file) {
                        Ok(dir) => {
                            eprintln!("warning: {invalid}");
                            (dir, None)
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match found {
                Some(d) => (d, config),
                None => {
                    eprintln!(
                        "error: {} has no [libraries] dir; set one, or give the folder with \
                         `gateway plugins list --dir DIR`",
                        config_file.display()
                    );
                    return ExitCode::from(2);
                }
            }
        }
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            eprintln!("error: cannot list {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX))
        })
        .collect();
    files.sort();
    outln!("folder {}", dir.display());
    if files.is_empty() {
        outln!(
            "  (no *{} files)",
            std::env::consts::DLL_SUFFIX.trim_start_matches('.')
        );
    }
    for path in files {
        let shown = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        outln!("{shown}");
        match look(&path) {
            Ok((d, sha256)) => describe(&d, &sha256, "  "),
            Err(e) => {
                outln!("  not a plugin: {e}");
                outln!("  sha256    {}", sha256_line(&path));
            }
        }
        if let Some(config) = &config {
            let users: Vec<&str> = config
                .plugins
                .iter()
                .filter(|p| p.library == path)
                .map(|p| p.name.as_str())
                .collect();
            if !users.is_empty() {
                outln!("  used by   {}", users.join(", "));
            }
        }
    }
    ExitCode::SUCCESS
}

/// `plugins call`: everything a real delivery goes through, in this process, once.
fn call(args: &CallArgs, config_file: Option<&Path>) -> ExitCode {
    // Inputs first: a typo in a file name is reported before any library code runs.
    let (config, config_dir) = match config_file {
        Some(file) => match load_plugin_config(file) {
            Ok(config) => {
                let dir = std::path::absolute(file)
                    .ok()
                    .and_then(|f| f.parent().map(Path::to_path_buf))
                    .unwrap_or_default();
                (config, dir)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => (
            serde_json::json!({}),
            std::env::current_dir().unwrap_or_default(),
        ),
    };
    let mut events = Vec::with_capacity(args.event.len());
    for file in &args.event {
        match read_event(file) {
            Ok(e)
                if events
                    .iter()
                    .any(|o: &lark_core::envelope::Event| o.id == e.id) =>
            {
                eprintln!(
                    "error: {} holds event {:?} again: a batch never holds one event twice",
                    file.display(),
                    e.id
                );
                return ExitCode::from(2);
            }
            Ok(e) => events.push(e),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let lib = match Library::open(&args.library) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let instance_name = args.instance.as_deref().unwrap_or(lib.name()).to_owned();
    outln!(
        "plugin    {} {} ({})",
        lib.name(),
        lib.version(),
        lib.path().display()
    );
    let mut deliveries = Vec::with_capacity(events.len());
    for event in &events {
        let payload = Payload {
            event_id: &event.id,
            plugin: &instance_name,
            app: &args.app,
            event_type: &event.event_type,
            received_at_ms: crate::store::sqlite::now_ms(),
            attempt: 1,
            body: &event.raw,
            // Read from the event file by `Envelope::parse`: JSON.
            parsed: true,
        };
        match payload.to_json() {
            Ok(d) => deliveries.push(d),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let delivery_line = |event: &lark_core::envelope::Event| {
        outln!(
            "delivery  {} (attempt 1, app {}, {})",
            crate::delivery::delivery_id(&event.id, &instance_name),
            args.app,
            event.event_type
        );
    };
    if events.len() == 1 {
        delivery_line(&events[0]);
    }
    if args.show_delivery {
        for d in &deliveries {
            outln!("{}", String::from_utf8_lossy(d));
        }
    }
    let make = || {
        lib.instantiate(
            &instance_name,
            &config,
            &config_dir,
            crate::plugins::log_sink(),
        )
    };
    let instance = match make() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `None` once a panicked instance was shut down and its restart failed.
    let mut instance = Some(instance);
    let code = if let (Some(instance), [delivery]) = (&instance, &deliveries[..]) {
        // As the engine calls a batch of one: `handle`.
        print_outcome(&instance.handle(delivery))
    } else {
        let has_batch = instance.as_ref().is_some_and(Instance::has_batch);
        let entry = if has_batch {
            "handle_batch"
        } else {
            "handle for each (the library has no batch entry)"
        };
        outln!("batch     {} deliveries through {entry}", deliveries.len());
        let inputs: Vec<&[u8]> = deliveries.iter().map(Vec::as_slice).collect();
        let called = match &instance {
            Some(batch) if has_batch => batch.handle_batch(&inputs),
            _ => Ok(one_by_one(&mut instance, &inputs, make)),
        };
        match called {
            Ok(outcomes) => {
                let mut first = None;
                for (event, outcome) in events.iter().zip(&outcomes) {
                    delivery_line(event);
                    let code = print_outcome(outcome);
                    first = first.or((code != 0).then_some(code));
                }
                first.unwrap_or(0)
            }
            Err(message) => {
                outln!("outcome   the batch failed as a whole");
                outln!("reason    {message}");
                outln!(
                    "(the gateway would replace the instance and call handle for each \
                     delivery alone)"
                );
                EXIT_PANICKED
            }
        }
    };
    // `shutdown` runs here, after the call returned (the last reference).
    drop(instance);
    ExitCode::from(code)
}

/// A library without a batch entry: `handle` for each delivery, as the gateway calls it, which
/// never hands a delivery to an instance that just panicked: the instance is shut down and a
/// fresh one made after that (not beside its `init`; when that `init` fails, the rest are
/// retries and `instance` is left `None`, as in the gateway).
fn one_by_one(
    instance: &mut Option<Instance>,
    deliveries: &[&[u8]],
    make: impl Fn() -> Result<Instance, InitError>,
) -> Vec<CallOutcome> {
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for (i, d) in deliveries.iter().enumerate() {
        let Some(current) = instance.as_ref() else {
            break;
        };
        let outcome = current.handle(d);
        let panicked = matches!(outcome, CallOutcome::Panicked { .. });
        outcomes.push(outcome);
        let left = deliveries.len() - i - 1;
        if panicked && left > 0 {
            outln!(
                "(delivery {} of {} panicked: the instance is replaced before the next, as the \
                 gateway does)",
                i + 1,
                deliveries.len()
            );
            // The old instance's `shutdown` runs now, before the fresh one's `init`.
            drop(instance.take());
            match make() {
                Ok(fresh) => *instance = Some(fresh),
                Err(e) => {
                    let reason = crate::plugins::restart_failed(&e);
                    outcomes.extend(crate::plugins::unavailable(left, &reason));
                    break;
                }
            }
        }
    }
    outcomes
}

/// Prints one delivery's outcome; its exit code (0 ok).
fn print_outcome(outcome: &CallOutcome) -> u8 {
    match outcome {
        CallOutcome::Ok => {
            outln!("outcome   ok");
            0
        }
        CallOutcome::Retry {
            reason,
            retry_after,
        } => {
            outln!("outcome   retry");
            outln!("reason    {reason}");
            match retry_after {
                Some(d) => outln!("retry_after {} ms", d.as_millis()),
                None => outln!("retry_after none (the gateway's backoff decides)"),
            }
            EXIT_RETRY
        }
        CallOutcome::Reject { reason } => {
            outln!("outcome   reject");
            outln!("reason    {reason}");
            EXIT_REJECT
        }
        CallOutcome::Panicked { message } => {
            outln!("outcome   panicked");
            outln!("reason    {message}");
            EXIT_PANICKED
        }
    }
}

/// The event file as the intake would take it from a long connection: a plaintext envelope.
fn read_event(path: &Path) -> Result<lark_core::envelope::Event, String> {
    let body = std::fs::read(path)
        .map_err(|e| format!("cannot read event file {}: {e}", path.display()))?;
    match Envelope::parse(&body) {
        Ok(Envelope::Event(event)) => Ok(event),
        Ok(Envelope::Encrypted { .. }) => Err(format!(
            "{} is an encrypted body ({{\"encrypt\": ...}}); give the decrypted envelope \
             (schema, header, event)",
            path.display()
        )),
        Ok(Envelope::Challenge { .. }) => Err(format!(
            "{} is a url_verification challenge, not an event",
            path.display()
        )),
        Err(e) => Err(format!(
            "{} is not a Lark event envelope: {e} (expected a schema 2.0 event such as \
             fixtures/assets_update_v1.json, or a schema 1.0 one)",
            path.display()
        )),
    }
}
