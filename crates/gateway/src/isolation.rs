//! Process isolation for plugins (`[[plugins]] isolation = "process"`): the instance lives in a
//! child process — this same binary, run as `gateway plugin-host --library PATH` — which loads
//! the `.so`, creates the instance and answers calls over its stdin/stdout ([`wire`]). The
//! gateway never loads an isolated plugin's library: it only opens and hashes the file (and
//! checks a `sha256` pin); the child loads the file only if the one it opens hashes to what the
//! gateway examined (on every start, restarts included), loads that open file, and reports the
//! descriptor and the hash back. So the library's load-time code (C/C++ constructors, its
//! dependencies' initialisers) runs only in the child. `gateway check` (and `plugins inspect` /
//! `list`) asks a short-lived child
//! to load the library and describe it (`Describe`), without creating an instance. Whatever
//! the native code does (segfault, `abort()`, `exit()`, a stack overflow, a hang) ends at most
//! the child: the calls in flight fail as retries, the gateway logs and counts the death, and
//! the next call starts a fresh child (with backoff). A call past `[delivery] timeout` kills
//! the child, so the timeout is enforced, which it cannot be for in-process native code.
//!
//! The child ends itself when its stdin closes: a gateway that dies, even by `kill -9`, leaves
//! no orphan behind.
//!
//! The frames travel on the pipes the child got as stdin and stdout, but plugin code must never
//! reach them: a plugin that prints (`printf`, `println!`, the logger with `stdout = true`)
//! would write into the frame stream. So before the library is loaded the child moves the
//! protocol to private duplicates of those descriptors (close-on-exec, so no process the plugin
//! starts inherits them), points fd 1 at stderr (plugin output lands in the gateway's log) and
//! fd 0 at `/dev/null`.
//!
//! [`parent`] is the gateway's side; [`describe`] the short-lived child of `gateway check` and
//! `plugins inspect` / `list`;
//! [`serve`] is the child's main loop.

pub mod describe;
pub mod parent;
pub mod wire;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use gateway_plugin::host::{InitError, Library, LibraryFile, LogSink};
use gateway_plugin::Level;
use wire::{FromChild, InitFailure, Loaded, ToChild};

/// The most bytes of a log line or start error a child sends (the gateway refuses frames of
/// these kinds over 1 MiB).
const MAX_CHILD_TEXT: usize = 64 * 1024;

/// The hidden subcommand the gateway starts its children with.
pub const SUBCOMMAND: &str = "plugin-host";

/// Empties the calling thread's ambient capability set, which the threads it starts inherit;
/// called first thing in `main`. A service given `CAP_NET_BIND_SERVICE` (systemd's
/// `AmbientCapabilities=`, to listen on 443) gets it in its ambient set, and Linux hands the
/// ambient set on to every program it executes: each isolated plugin's child (and whatever the
/// plugin itself runs) would hold the capability too. With the set empty they start with none
/// (a non-root user's), while this process keeps its own permitted and effective sets (its
/// listeners, bound later, still need it). `prctl`, allowed under the unit's
/// `SystemCallFilter=~@privileged` (dropping the capability itself with `capset` is not). A
/// kernel without ambient sets (before 4.3) has nothing to clear: the error is ignored.
pub fn clear_ambient_capabilities() {
    let _ = rustix::thread::clear_ambient_capability_set();
}

/// Takes the protocol off fds 0 and 1 before any plugin code runs: returns private,
/// close-on-exec duplicates of stdin and stdout (the pipes from the gateway) after pointing
/// fd 1 at stderr and fd 0 at `/dev/null`. What the plugin prints goes to the gateway's stderr.
fn protocol_stdio() -> std::io::Result<(File, File)> {
    use rustix::io::fcntl_dupfd_cloexec;
    // Above the standard descriptors, so a later `dup2` onto 0/1/2 can never hit them.
    let input = fcntl_dupfd_cloexec(std::io::stdin(), 3)?;
    let output = fcntl_dupfd_cloexec(std::io::stdout(), 3)?;
    rustix::stdio::dup2_stdout(std::io::stderr())?;
    // A plugin reading stdin must not eat frames either. Best effort: without /dev/null, fd 0
    // stays on the gateway's pipe.
    if let Ok(null) = File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    Ok((File::from(input), File::from(output)))
}

/// Opens the library once, checks that open file against `sha256` (the hash of the file the
/// gateway examined; `pinned` when it is the config's pin) and loads that same file: a file
/// renamed over the path since the gateway looked is refused, never loaded.
fn load(library: &Path, sha256: &str, pinned: bool) -> Result<(Library, Loaded), String> {
    let file = LibraryFile::open(library).map_err(|e| e.to_string())?;
    crate::plugins::check_examined(&file, sha256, pinned)?;
    let sha256 = file.sha256().to_owned();
    let lib = file.load().map_err(|e| e.to_string())?;
    let descriptor = lib.summary();
    Ok((lib, Loaded { sha256, descriptor }))
}

/// `gateway plugin-host --library PATH`: serves one instance over stdin/stdout until stdin
/// closes. Log lines and outcomes go back as frames on private duplicates of those pipes
/// ([`protocol_stdio`]); stdout and stderr both reach the gateway's stderr.
pub fn serve(library: &Path) -> ExitCode {
    let (input, output) = match protocol_stdio() {
        Ok(pipes) => pipes,
        Err(e) => {
            eprintln!("plugin-host: cannot set up its pipes: {e}");
            return ExitCode::from(2);
        }
    };
    let out = Arc::new(Mutex::new(BufWriter::new(output)));
    let send = {
        let out = out.clone();
        move |m: &FromChild| -> bool {
            match out.lock() {
                Ok(mut o) => m.write(&mut *o).is_ok(),
                Err(_) => false,
            }
        }
    };
    // Nothing reads the input while the library loads and its instance starts: a gateway that
    // dies meanwhile (even by `kill -9`) is noticed by this watch instead.
    let serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Ok(watched) = input.try_clone() {
        watch_gateway_while_starting(watched, serving.clone());
    }
    let mut input = BufReader::new(input);
    let (init, sha256, pinned) = match ToChild::read(&mut input) {
        Ok(Some(ToChild::Init(init))) => {
            let (sha256, pinned) = (init.sha256.clone(), init.pinned);
            (Some(init), sha256, pinned)
        }
        Ok(Some(ToChild::Describe(d))) => (None, d.sha256, d.pinned),
        _ => return ExitCode::from(2),
    };
    let (lib, loaded) = match load(library, &sha256, pinned) {
        Ok(l) => l,
        Err(message) => {
            send(&FromChild::InitErr {
                kind: InitFailure::Load,
                message: crate::delivery::detail::cap_to(message, MAX_CHILD_TEXT),
            });
            return ExitCode::from(3);
        }
    };
    // `Describe`: the descriptor was all the gateway wanted.
    let Some(init) = init else {
        return if send(&FromChild::Described(loaded)) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    };
    let log_out = out.clone();
    let log: LogSink = Arc::new(move |_instance: &str, level: Level, message: &str| {
        if let Ok(mut o) = log_out.lock() {
            // A frame the gateway would refuse as too large would end this process: a long
            // line is cut here instead (an in-process plugin's is logged whole).
            let _ = FromChild::Log {
                level: level.to_abi(),
                message: crate::delivery::detail::cap_to(message.to_owned(), MAX_CHILD_TEXT),
            }
            .write(&mut *o);
        }
    });
    let instance = match lib.instantiate(&init.name, &init.config, Path::new(&init.config_dir), log)
    {
        Ok(i) => i,
        Err(e) => {
            // The message alone: the gateway names the instance and the kind of failure
            // (`InitError`'s own text would then be said twice).
            let (kind, message) = match e {
                InitError::Panicked { message, .. } => (InitFailure::Panicked, message),
                InitError::Refused { message, .. } => (InitFailure::Refused, message),
                other => (InitFailure::Refused, other.to_string()),
            };
            send(&FromChild::InitErr {
                kind,
                message: crate::delivery::detail::cap_to(message, MAX_CHILD_TEXT),
            });
            return ExitCode::from(3);
        }
    };
    // Before the gateway hears of it (and may close the input to retire this child): from
    // here the main loop reads the input, and notices its end.
    serving.store(true, std::sync::atomic::Ordering::SeqCst);
    if !send(&FromChild::InitOk(loaded)) {
        return ExitCode::from(2);
    }
    // The gateway: when it dies, this process is handed to another parent.
    let gateway = std::os::unix::process::parent_id();
    // One thread per call in flight (the gateway sends at most `max_concurrency` at once).
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        match ToChild::read(&mut input) {
            Ok(Some(ToChild::Batch { id, deliveries })) => {
                let instance = instance.clone();
                let send = send.clone();
                let in_flight = in_flight.clone();
                in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let refs: Vec<&[u8]> = deliveries.iter().map(Vec::as_slice).collect();
                    // One delivery goes to `handle`, as in process: after a batch panicked as
                    // a whole, each delivery is sent alone so that `handle` takes it (a batch
                    // entry that panics whatever it is given would otherwise end them all).
                    let reply = match refs.as_slice() {
                        [one] => FromChild::Outcomes {
                            id,
                            outcomes: vec![instance.handle(one)],
                        },
                        _ => match instance.handle_batch(&refs) {
                            Ok(outcomes) => FromChild::Outcomes { id, outcomes },
                            Err(message) => FromChild::BatchPanicked { id, message },
                        },
                    };
                    send(&reply);
                    // Before the count goes down: the main thread's drop must be the last one
                    // (the plugin's shutdown runs there, not here beside the exit).
                    drop(instance);
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
            // Only the first frame starts anything.
            Ok(Some(ToChild::Init(_) | ToChild::Describe(_))) => {}
            // The gateway closed the pipe (it retires this child, or it stops or died): let
            // calls in flight finish and shut the instance down. While the gateway lives it
            // decides how long (it kills a child whose call outlives its timeout, and one it
            // stops with 5 s after closing the pipe). Once it is gone, this child leaves at
            // once, its calls cut short as the gateway's own were: their outcomes can reach no
            // one, the next gateway counts them as crashed and calls them again, and a call
            // left running here would run beside that one.
            Ok(None) | Err(_) => {
                // From here nothing reads the input: a gateway that dies while this child
                // finishes its calls, runs the plugin's `shutdown` or exits (its handlers, the
                // library's destructors) is noticed by this watch, which ends the group.
                watch_gateway_while_leaving(gateway);
                while in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
                    && std::os::unix::process::parent_id() == gateway
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let idle = in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0;
                if idle {
                    drop(instance); // the last reference: the plugin's shutdown runs
                }
                if let Ok(mut o) = out.lock() {
                    let _ = o.flush();
                }
                if std::os::unix::process::parent_id() != gateway {
                    // The gateway is gone (no one ends this process's group for it): end now,
                    // with the processes the plugin started that stayed in the group (each
                    // child leads one), and, when calls still run, without the exit handlers
                    // and the library's destructors, which would run beside those calls (one
                    // waiting on a lock a call holds would keep this process, and its call,
                    // alive). A signal sent to the group, this process included, not an exit.
                    end_own_group();
                }
                std::process::exit(0);
            }
        }
    }
}

/// SIGKILL to this process's group: this process (which leads it) and what the plugin started
/// in it.
fn end_own_group() {
    let _ = rustix::process::kill_process_group(
        rustix::process::getpid(),
        rustix::process::Signal::KILL,
    );
    // Not in a group of its own (run by hand): itself at least.
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
}

/// Until `serving` is set: ends this process (its group) as soon as the gateway is gone, which
/// the end of `input` (the gateway's pipe, hung up) tells, while nothing reads it: the library
/// loading (its constructors) and the instance's `init` can take long or hang.
fn watch_gateway_while_starting(input: File, serving: Arc<std::sync::atomic::AtomicBool>) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::sync::atomic::Ordering;
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    let _ = std::thread::Builder::new()
        .name("gateway-watch".into())
        .spawn(move || {
            while !serving.load(Ordering::SeqCst) {
                // No events asked for: a hang-up (or an error) is reported whatever is asked,
                // and the frames waiting in the pipe are left for the main thread.
                let mut fds = [PollFd::new(&input, PollFlags::empty())];
                let hung_up = matches!(poll(&mut fds, Some(&tick)), Ok(n) if n > 0)
                    && fds[0].revents().intersects(PollFlags::HUP | PollFlags::ERR);
                if hung_up && !serving.load(Ordering::SeqCst) {
                    end_own_group();
                }
            }
        });
}

/// Once the input closed: ends this process (its group) as soon as its parent, the gateway
/// (`gateway`), is gone, whatever the process is doing meanwhile (its calls, the plugin's
/// `shutdown`, its exit).
fn watch_gateway_while_leaving(gateway: u32) {
    let _ = std::thread::Builder::new()
        .name("gateway-gone".into())
        .spawn(move || loop {
            if std::os::unix::process::parent_id() != gateway {
                end_own_group();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
}
