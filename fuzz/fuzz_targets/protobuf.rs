//! Any bytes as what the API server sends in protobuf: a list, a watch
//! frame, or a bare Service or EndpointSlice message. Decoding returns an
//! object or an error, never panics, and whatever it accepts the index can
//! take.

#![no_main]

use kubedisco::index::{Index, Scope};
use kubedisco::source::metrics::InvalidWeights;
use kubedisco::source::proto;
use kubedisco::source::service::LeanService;
use kubedisco::source::slice::Slice;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut messages: Vec<&[u8]> = vec![data];
    if let Ok(list) = proto::list(data) {
        messages.extend(list.items);
    }
    if let Ok(event) = proto::watch_event(data) {
        messages.push(event.object);
        let _ = proto::status(event.object);
    }
    let invalid_weights = InvalidWeights::default();
    let services: Vec<_> = messages
        .iter()
        .filter_map(|m| LeanService::from_protobuf(m).ok())
        .map(|service| service.into_object(&invalid_weights))
        .collect();
    let slices: Vec<_> = messages
        .iter()
        .filter_map(|m| Slice::from_protobuf(m).ok())
        .filter_map(|slice| slice.into_object(&invalid_weights))
        .collect();
    let index = Index::default();
    index.replace(&Scope::All, Some(services), Some(slices), "fuzz");
    let _ = index.load().endpoint_count;
});
