//! Any text as a manifest file: the parser returns objects or an error,
//! never panics, and whatever it accepts the index can take.

#![no_main]

use kubedisco::index::{Index, Scope};
use kubedisco::source::manifest::parse_manifests;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_manifests(text, &Default::default()) {
        let index = Index::default();
        index.replace(&Scope::All, Some(parsed.services), Some(parsed.slices), "fuzz");
        let _ = index.load().endpoint_count;
    }
});
