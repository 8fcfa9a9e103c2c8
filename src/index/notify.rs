//! Per-Service change notification.
//!
//! A blocking query or a watch stream waits on one Service only, so churn in
//! other Services never wakes it. Channels exist only while somebody waits:
//! the writer drops a Service's channel when it finds no receiver left.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::objects::ServiceKey;

#[derive(Default)]
pub(crate) struct Notifier {
    senders: Mutex<HashMap<ServiceKey, watch::Sender<u64>>>,
}

impl Notifier {
    /// Subscribe before reading the snapshot: a change published after this
    /// call is then always seen, even one that lands before the first wait.
    pub(crate) fn subscribe(&self, key: &ServiceKey) -> watch::Receiver<u64> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        // Waiters that gave up leave channels behind; sweep them now and then
        // so a client cycling through unknown names cannot grow the map.
        if senders.len() >= 1024 && senders.len().is_power_of_two() {
            senders.retain(|_, sender| sender.receiver_count() > 0);
        }
        senders
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes everybody waiting on these Services.
    pub(crate) fn notify<'a>(&self, changed: impl IntoIterator<Item = (&'a ServiceKey, u64)>) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if senders.is_empty() {
            return;
        }
        for (key, revision) in changed {
            if let Some(sender) = senders.get(key) {
                if sender.receiver_count() == 0 {
                    senders.remove(key);
                } else {
                    sender.send_replace(revision);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_changed_service_wakes() {
        let notifier = Notifier::default();
        let a = ServiceKey::new("ns", "a");
        let b = ServiceKey::new("ns", "b");
        let rx_a = notifier.subscribe(&a);
        let mut rx_b = notifier.subscribe(&b);
        notifier.notify([(&b, 7)]);
        assert!(!rx_a.has_changed().unwrap());
        assert!(rx_b.has_changed().unwrap());
        assert_eq!(*rx_b.borrow_and_update(), 7);
    }

    #[test]
    fn channels_without_receivers_are_dropped() {
        let notifier = Notifier::default();
        let a = ServiceKey::new("ns", "a");
        drop(notifier.subscribe(&a));
        notifier.notify([(&a, 1)]);
        assert_eq!(notifier.senders.lock().unwrap().len(), 0);
    }
}
