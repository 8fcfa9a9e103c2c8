//! A whole snapshot file from the index's contents ([`encode`]), and the
//! contents an agent may serve from a file ([`decode`]).
//!
//! Composes [`super::format`] (the frame) and [`super::payload`] (the
//! JSON); the rule of which snapshot an agent may use is
//! [`super::coverage`]'s. No I/O.

use std::time::SystemTime;

use super::coverage::Coverage;
use super::format::{LoadError, frame, unframe};
use super::payload::Payload;
use crate::index::Contents;

/// A loaded snapshot, ready for [`crate::index::Index::seed`].
#[derive(Debug)]
pub struct Loaded {
    pub contents: Contents,
    /// When its data was last known to match the source.
    pub(crate) fresh_at: SystemTime,
    pub(crate) taken_at: SystemTime,
}

/// The whole file for `contents`, taken by an agent watching `coverage`.
pub fn encode(
    contents: &Contents,
    coverage: &Coverage,
    taken_at: SystemTime,
    fresh_at: SystemTime,
) -> Vec<u8> {
    let payload = Payload::new(contents, coverage, taken_at, fresh_at);
    // Serializing plain structs into a Vec cannot fail.
    frame(&serde_json::to_vec(&payload).unwrap_or_default())
}

/// Checks and parses a whole file; `wanted` filters what the agent serves.
pub fn decode(bytes: &[u8], wanted: &Coverage) -> Result<Loaded, LoadError> {
    let payload: Payload =
        serde_json::from_slice(unframe(bytes)?).map_err(|e| LoadError::Payload(e.to_string()))?;
    if !payload.coverage.covers(wanted) {
        return Err(LoadError::Coverage {
            found: payload.coverage,
            wanted: wanted.clone(),
        });
    }
    let (fresh_at, taken_at) = (payload.fresh_at(), payload.taken_at());
    Ok(Loaded {
        contents: payload.into_contents(wanted)?,
        fresh_at,
        taken_at,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{everything as scope, sample_index, sorted};
    use super::super::format::HEADER_LEN;
    use super::*;
    use crate::index::Index;

    #[test]
    fn round_trip_restores_objects_and_served_state() {
        let index = sample_index();
        let exported = index.export();
        let now = SystemTime::now();
        let bytes = encode(&exported, &scope(), now, now);
        let loaded = decode(&bytes, &scope()).unwrap();
        let a = sorted(exported);
        let b = sorted(loaded.contents);
        assert_eq!(a.services, b.services);
        assert_eq!(a.slices, b.slices);
        assert_eq!(a.pod_weights, b.pod_weights);
        assert_eq!(a.generation, b.generation);

        let seeded = Index::default();
        seeded.seed(b);
        let (before, after) = (index.load(), seeded.load());
        assert!(after.synced, "a seeded index is synced at once");
        let (x, y) = (
            before.get("ns", "web").unwrap(),
            after.get("ns", "web").unwrap(),
        );
        assert!(x.same_served_state(y));
        assert!(
            y.revision > a.generation,
            "revisions continue above the snapshot's"
        );
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let now = SystemTime::now();
        let bytes = encode(&sample_index().export(), &scope(), now, now);
        // Every truncation.
        for len in [0, 3, 8, 20, HEADER_LEN, bytes.len() - 1] {
            let error = decode(&bytes[..len], &scope()).unwrap_err();
            assert!(matches!(error, LoadError::Truncated(_)), "{len}: {error}");
        }
        // Any flipped payload bit.
        for at in [HEADER_LEN, HEADER_LEN + 17, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(matches!(decode(&bad, &scope()), Err(LoadError::Checksum)));
        }
        let mut foreign = bytes.clone();
        // A version-1 file: written before slices recorded their headless label.
        foreign[8] = 1;
        assert!(matches!(
            decode(&foreign, &scope()),
            Err(LoadError::Version { found: 1 })
        ));
        assert!(matches!(
            decode(b"{\"services\": []}", &scope()),
            Err(LoadError::Magic)
        ));
        // Trailing garbage is as wrong as missing bytes.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode(&long, &scope()),
            Err(LoadError::Truncated(_))
        ));
    }

    #[test]
    fn scope_must_cover_what_the_agent_watches() {
        let now = SystemTime::now();
        let narrow = Coverage {
            namespaces: vec!["ns".into()],
            ..scope()
        };
        let bytes = encode(&sample_index().export(), &narrow, now, now);
        assert!(decode(&bytes, &narrow).is_ok());
        // Taken for one namespace, used for all: it would hide Services.
        assert!(matches!(
            decode(&bytes, &scope()),
            Err(LoadError::Coverage { .. })
        ));
        let manifests = Coverage {
            source: "manifests".into(),
            ..narrow.clone()
        };
        assert!(matches!(
            decode(&bytes, &manifests),
            Err(LoadError::Coverage { .. })
        ));
        // Taken for all, used for one namespace: filtered.
        let bytes = encode(&sample_index().export(), &scope(), now, now);
        let other = Coverage {
            namespaces: vec!["other".into()],
            pod_weights: false,
            ..scope()
        };
        let loaded = decode(&bytes, &other).unwrap();
        assert!(loaded.contents.services.is_empty() && loaded.contents.pod_weights.is_empty());
    }
}
