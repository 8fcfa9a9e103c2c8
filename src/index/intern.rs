//! One shared copy of strings that repeat across endpoints.
//!
//! A cluster's 100 000 endpoints name a few hundred nodes, a handful of
//! zones, "Pod" and their namespaces over and over. Converted objects take
//! those strings from here, so each distinct value is allocated once and
//! endpoints hold a pointer to it.
//!
//! Values nobody holds any more (a node that left) are dropped when the
//! table has doubled since it was last pruned, so it stays proportional to
//! what the index holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Default)]
struct Table {
    strings: HashSet<Arc<str>>,
    /// Prune when the table grows past this.
    prune_at: usize,
}

/// Strings longer than this are unlikely to repeat (Pod names have random
/// suffixes; node names and zones are short): not worth a table entry.
const MAX_INTERNED_LEN: usize = 128;
const MIN_PRUNE_AT: usize = 1024;

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// The shared copy of `text`.
pub fn intern(text: &str) -> Arc<str> {
    if text.len() > MAX_INTERNED_LEN {
        return Arc::from(text);
    }
    let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = table.strings.get(text) {
        return shared.clone();
    }
    if table.strings.len() >= table.prune_at.max(MIN_PRUNE_AT) {
        // Only the table holds these: nothing uses them any more.
        table.strings.retain(|s| Arc::strong_count(s) > 1);
        table.prune_at = table.strings.len() * 2;
    }
    let shared: Arc<str> = Arc::from(text);
    table.strings.insert(shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a = intern("node-interned-test-1");
        let b = intern(&String::from("node-interned-test-1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &intern("node-interned-test-2")));
    }

    #[test]
    fn unused_strings_are_pruned_as_the_table_grows() {
        let kept = intern("zone-kept-while-held");
        for i in 0..3 * MIN_PRUNE_AT {
            intern(&format!("transient-{i}"));
        }
        let table = table().lock().unwrap();
        assert!(table.strings.len() < 3 * MIN_PRUNE_AT, "pruned");
        assert!(table.strings.contains("zone-kept-while-held"));
        drop(table);
        assert!(Arc::ptr_eq(&kept, &intern("zone-kept-while-held")));
    }
}
