//! Any bytes as a DNS query, over UDP and TCP, against the demo index: the
//! server must never panic, and every reply it sends must be a well-formed
//! DNS message (checked with hickory-proto) answering the same ID, and fit
//! in the size the transport allows.

#![no_main]

use std::sync::{Arc, OnceLock};

use kubedisco::dns::answer::Zone;
use kubedisco::dns::wire::Response;
use kubedisco::dns::{Handled, handle_packet};
use kubedisco::index::{Index, Scope, Snapshot};
use kubedisco::source::manifest::demo_objects;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fn demo() -> &'static (Zone, Arc<Snapshot>) {
    static DEMO_INDEX: OnceLock<(Zone, Arc<Snapshot>)> = OnceLock::new();
    DEMO_INDEX.get_or_init(|| {
        let index = Index::default();
        index.expect_parts(["demo"]);
        let demo = demo_objects();
        index.replace(&Scope::All, Some(demo.services), Some(demo.slices), "demo");
        (Zone::new("cluster.local", 5), index.load())
    })
}

fuzz_target!(|packet: &[u8]| {
    let (zone, snapshot) = demo();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for over_udp in [true, false] {
        let mut response = Response::default();
        let (handled, _) = handle_packet(zone, snapshot, packet, over_udp, &mut response, &mut rng);
        if handled != Handled::Reply {
            continue;
        }
        assert!(response.len() >= 12);
        assert_eq!(response.buf[..2], packet[..2], "reply carries the query's ID");
        assert!(response.buf[2] & 0x80 != 0, "reply has QR set");
        if over_udp {
            assert!(response.len() <= 1232 || response.is_truncated() && response.len() <= 1232);
        }
        hickory_proto::op::Message::from_vec(&response.buf)
            .unwrap_or_else(|e| panic!("reply does not decode: {e}: {:?}", response.buf));
    }
});
