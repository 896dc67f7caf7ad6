//! A queue's permits and counts, and a reload's swap: the permits of calls hung on the replaced
//! instance handed to the new one once, and the limit resized (raised at once, lowered as calls
//! give theirs back). The instance is a stand-in: the queue only compares it by address.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{HungCall, PluginQueue};

type Slot = &'static str;

fn queue(slot: &Arc<Slot>, limit: usize) -> PluginQueue<Slot> {
    PluginQueue {
        tx: mpsc::channel(1).0,
        slot: Arc::new(RwLock::new(slot.clone())),
        permits: Arc::new(Semaphore::new(limit)),
        limit: Mutex::new(limit),
        running: Arc::new(AtomicUsize::new(0)),
        hung: Default::default(),
        cancel: CancellationToken::new(),
    }
}

fn hung(q: &PluginQueue<Slot>, slot: &Arc<Slot>) -> Arc<HungCall<Slot>> {
    let call = Arc::new(HungCall {
        slot: slot.clone(),
        forgiven: AtomicBool::new(false),
    });
    q.hung.lock().expect("hung").push(call.clone());
    call
}

/// Waits (up to a second) for the spawned task that takes a lowered limit's surplus.
async fn settles_at(q: &PluginQueue<Slot>, available: usize) {
    for _ in 0..1000 {
        if q.permits.available_permits() == available {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(q.permits.available_permits(), available);
}

#[tokio::test]
async fn permits_count_the_calls_running() {
    let slot = Arc::new("a");
    let q = queue(&slot, 2);
    assert_eq!(q.running(), 0);
    let first = q.permit().await.expect("a permit");
    assert_eq!((q.running(), q.others_running()), (1, false));
    let second = q.permit().await.expect("a second permit");
    assert_eq!((q.running(), q.others_running()), (2, true));
    assert_eq!(q.permits.available_permits(), 0);
    drop(first);
    assert_eq!((q.running(), q.others_running()), (1, false));
    assert_eq!(q.permits.available_permits(), 1);
    drop(second);
    assert_eq!(q.running(), 0);
    assert_eq!(q.permits.available_permits(), 2);
    q.permits.close();
    assert!(q.permit().await.is_none(), "a closed queue gives none");
}

#[tokio::test]
async fn a_forgotten_permit_ends_its_call_but_is_not_given_back() {
    let slot = Arc::new("a");
    let q = queue(&slot, 1);
    let permit = q.permit().await.expect("a permit");
    permit.forget();
    assert_eq!(q.running(), 0, "the call ended");
    assert_eq!(q.permits.available_permits(), 0, "its permit is not back");
}

#[tokio::test]
async fn a_new_instance_gets_the_permits_of_calls_hung_on_the_old_one_once() {
    let (old, new, other) = (Arc::new("old"), Arc::new("new"), Arc::new("other"));
    let q = queue(&old, 2);
    let _held = (
        q.permit().await.expect("one"),
        q.permit().await.expect("two"),
    );
    let on_old = hung(&q, &old);
    let on_other = hung(&q, &other);
    assert!(Arc::ptr_eq(&q.slot().expect("a slot"), &old));

    // A reload that keeps the instance hands nothing over.
    q.replace(&old, 2);
    assert_eq!(q.permits.available_permits(), 0);
    assert!(!on_old.forgiven.load(Ordering::SeqCst));

    q.replace(&new, 2);
    assert!(Arc::ptr_eq(&q.slot().expect("a slot"), &new));
    assert!(on_old.forgiven.load(Ordering::SeqCst));
    assert!(!on_other.forgiven.load(Ordering::SeqCst));
    assert_eq!(q.permits.available_permits(), 1, "the hung call's permit");

    // Replaced again, by a call already forgiven: nothing more.
    let newer = Arc::new("newer");
    q.replace(&newer, 2);
    assert_eq!(q.permits.available_permits(), 1);
}

/// A call whose timeout comes after the reload that replaced its instance (review finding: the
/// reload came first, found no hung call, and the call kept its permit for as long as it hung,
/// so a reload meant to fix a hanging plugin did not take effect): its permit goes to the
/// instance in place as it is listed, once; a call hung on the instance in place keeps its own
/// until a reload replaces that.
#[tokio::test]
async fn a_call_hung_after_the_reload_that_replaced_its_instance_hands_its_permit_over() {
    let (old, new) = (Arc::new("old"), Arc::new("new"));
    let q = queue(&old, 1);
    let _held = q.permit().await.expect("the call's permit");
    q.replace(&new, 1);
    assert_eq!(q.permits.available_permits(), 0, "nothing hung yet");
    let late = q.register_hung(&old);
    assert!(late.forgiven.load(Ordering::SeqCst));
    assert_eq!(q.permits.available_permits(), 1, "the hung call's permit");
    // A later reload does not forgive it twice.
    q.replace(&Arc::new("newer"), 1);
    assert_eq!(q.permits.available_permits(), 1);

    let q = queue(&old, 1);
    let _held = q.permit().await.expect("the call's permit");
    let current = q.register_hung(&old);
    assert!(!current.forgiven.load(Ordering::SeqCst));
    assert_eq!(q.permits.available_permits(), 0);
    q.replace(&new, 1);
    assert!(current.forgiven.load(Ordering::SeqCst));
    assert_eq!(q.permits.available_permits(), 1);
}

/// A name removed and configured again before a call of its removed queue hangs past its
/// timeout: the queue it gets back shares the instance cell (as the engine builds it), so that
/// call, listed hung on the removed queue, hands its permit to the instance in place (review
/// finding: the removed queue's own cell still held the old instance, so nothing was handed
/// over and the new instance waited for the old call as long as it hung).
#[tokio::test]
async fn a_call_hung_on_a_removed_queue_hands_its_permit_to_the_name_configured_again() {
    let (old, new) = (Arc::new("old"), Arc::new("new"));
    let removed = queue(&old, 1);
    let _held = removed.permit().await.expect("the call's permit");
    let back = PluginQueue {
        tx: mpsc::channel(1).0,
        slot: removed.slot.clone(),
        permits: removed.permits.clone(),
        limit: Mutex::new(1),
        running: removed.running.clone(),
        hung: removed.hung.clone(),
        cancel: CancellationToken::new(),
    };
    back.replace(&new, 1);
    assert_eq!(back.permits.available_permits(), 0, "nothing hung yet");
    let late = removed.register_hung(&old);
    assert!(late.forgiven.load(Ordering::SeqCst));
    assert_eq!(
        back.permits.available_permits(),
        1,
        "the hung call's permit"
    );
}

#[tokio::test]
async fn a_raised_limit_adds_the_difference_at_once() {
    let slot = Arc::new("a");
    let q = queue(&slot, 2);
    q.replace(&slot, 5);
    assert_eq!(q.permits.available_permits(), 5);
    assert_eq!(*q.limit.lock().expect("limit"), 5);
    q.replace(&slot, 5);
    assert_eq!(q.permits.available_permits(), 5, "the same limit adds none");
}

#[tokio::test]
async fn a_lowered_limit_takes_its_surplus_as_calls_return() {
    let slot = Arc::new("a");
    let q = queue(&slot, 4);
    let (first, second) = (
        q.permit().await.expect("one"),
        q.permit().await.expect("two"),
    );
    q.replace(&slot, 1);
    assert_eq!(*q.limit.lock().expect("limit"), 1);
    // Three permits are the surplus: the two free ones at once, the third from the first call
    // to return; the second call's permit is the new limit.
    settles_at(&q, 0).await;
    drop(first);
    settles_at(&q, 0).await;
    drop(second);
    settles_at(&q, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(q.permits.available_permits(), 1, "the new limit, no less");
    assert_eq!(q.running(), 0);
}
