//! Kubernetes' protobuf encoding, read by hand for the few messages the
//! agent needs.
//!
//! Why: at start-up the API server encodes every Service and EndpointSlice
//! for the agent. As JSON that costs it about five times the CPU of
//! protobuf (measured on the test control plane: 10 000 slices of 10
//! endpoints, 1.3–1.5 s against 0.2–0.3 s, 70 MB against 22 MB), and on a
//! node the API server's time is the agent's time to ready. kube-rs speaks
//! only JSON, and no generated code is needed for a dozen fields: this
//! module reads the wire format (varints and length-delimited fields,
//! unknown fields skipped) and the envelopes Kubernetes wraps objects in;
//! the field numbers come from the `generated.proto` files of `k8s.io/api`
//! and `k8s.io/apimachinery`, cited where they are used.
//!
//! - an object or list on its own: `k8s\0` + `runtime.Unknown { typeMeta = 1,
//!   raw = 2, contentEncoding = 3, contentType = 4 }`, `raw` the message;
//! - a watch stream: frames of a 4-byte big-endian length and a
//!   `meta.v1.WatchEvent { type = 1, object = 2 (RawExtension { raw = 1 }) }`
//!   without an envelope, whose object is enveloped as above.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The prefix of every enveloped protobuf object.
const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type the agent asks for.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What was wrong with a message; names the message and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf {0}")]
pub struct ProtoError(pub String);

fn malformed(what: impl Into<String>) -> ProtoError {
    ProtoError(what.into())
}

/// One field's value on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Value<'a> {
    pub fn bytes(self, field: &str) -> Result<&'a [u8], ProtoError> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(malformed(format!("{field}: expected length-delimited"))),
        }
    }

    pub fn text(self, field: &str) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes(field)?)
            .map_err(|_| malformed(format!("{field}: not UTF-8")))
    }

    pub fn varint(self, field: &str) -> Result<u64, ProtoError> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(malformed(format!("{field}: expected a varint"))),
        }
    }

    pub fn boolean(self, field: &str) -> Result<bool, ProtoError> {
        Ok(self.varint(field)? != 0)
    }

    /// An `int32`: negative numbers are sign-extended to ten bytes.
    pub fn int32(self, field: &str) -> Result<i32, ProtoError> {
        Ok(self.varint(field)? as i64 as i32)
    }
}

/// The fields of one message, in wire order.
pub struct Fields<'a> {
    rest: &'a [u8],
}

pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or_else(|| malformed("message: truncated varint"))?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("message: varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.rest.len() < n {
            return Err(malformed("message: field runs past its end"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// The next `(field number, value)`, or None at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, ProtoError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| malformed("message: field number"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| malformed("message: length"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            other => return Err(malformed(format!("message: wire type {other}"))),
        };
        Ok(Some((number, value)))
    }
}

/// Calls `each` for every field of `message`.
pub fn for_each<'a>(
    message: &'a [u8],
    mut each: impl FnMut(u32, Value<'a>) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    let mut fields = fields(message);
    while let Some((number, value)) = fields.next_field()? {
        each(number, value)?;
    }
    Ok(())
}

/// The message inside an enveloped object (`k8s\0` + `runtime.Unknown`).
pub fn unwrap_envelope(data: &[u8]) -> Result<&[u8], ProtoError> {
    let unknown = data
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("object: no k8s protobuf prefix"))?;
    let mut raw: &[u8] = &[];
    for_each(unknown, |number, value| {
        match number {
            2 => raw = value.bytes("Unknown.raw")?,
            3 if !value.bytes("Unknown.contentEncoding")?.is_empty() => {
                return Err(malformed("object: content encoding not supported"));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(raw)
}

/// An object that may or may not carry the envelope (a watch event's
/// object always does; accepting both costs nothing).
fn object_message(raw: &[u8]) -> Result<&[u8], ProtoError> {
    if raw.starts_with(MAGIC) {
        unwrap_envelope(raw)
    } else {
        Ok(raw)
    }
}

/// A `meta.v1.ObjectMeta` with name (1), namespace (3), uid (5),
/// resourceVersion (6), and of labels (11) and annotations (12) only the
/// given keys; the rest (managedFields, owner references...) is skipped.
pub fn object_meta(
    message: &[u8],
    labels: &[&str],
    annotations: &[&str],
) -> Result<ObjectMeta, ProtoError> {
    let mut meta = ObjectMeta::default();
    for_each(message, |number, value| {
        match number {
            1 => meta.name = Some(value.text("ObjectMeta.name")?.to_string()),
            3 => meta.namespace = Some(value.text("ObjectMeta.namespace")?.to_string()),
            5 => meta.uid = Some(value.text("ObjectMeta.uid")?.to_string()),
            6 => {
                meta.resource_version = Some(value.text("ObjectMeta.resourceVersion")?.to_string())
            }
            11 => map_entry(value.bytes("ObjectMeta.labels")?, labels, &mut meta.labels)?,
            12 => map_entry(
                value.bytes("ObjectMeta.annotations")?,
                annotations,
                &mut meta.annotations,
            )?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(meta)
}

/// One entry of a `map<string, string>` (key = 1, value = 2), kept when
/// its key is wanted.
fn map_entry(
    entry: &[u8],
    wanted: &[&str],
    map: &mut Option<BTreeMap<String, String>>,
) -> Result<(), ProtoError> {
    let (mut key, mut text) = ("", "");
    for_each(entry, |number, value| {
        match number {
            1 => key = value.text("map key")?,
            2 => text = value.text("map value")?,
            _ => {}
        }
        Ok(())
    })?;
    let map = map.get_or_insert_with(BTreeMap::new);
    if wanted.contains(&key) {
        map.insert(key.to_string(), text.to_string());
    }
    Ok(())
}

/// A decoded list: its resourceVersion and continue token (ListMeta 2 and
/// 3), and its items' messages (field 2 of every `*List`).
pub struct List<'a> {
    pub resource_version: String,
    pub continue_token: String,
    pub items: Vec<&'a [u8]>,
}

pub fn list(data: &[u8]) -> Result<List<'_>, ProtoError> {
    let message = unwrap_envelope(data)?;
    let mut list = List {
        resource_version: String::new(),
        continue_token: String::new(),
        items: Vec::new(),
    };
    for_each(message, |number, value| {
        match number {
            1 => for_each(value.bytes("List.metadata")?, |number, value| {
                match number {
                    2 => list.resource_version = value.text("ListMeta.resourceVersion")?.into(),
                    3 => list.continue_token = value.text("ListMeta.continue")?.into(),
                    _ => {}
                }
                Ok(())
            })?,
            2 => list.items.push(value.bytes("List.items")?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(list)
}

/// A watch event: its type and its object's message.
pub struct WatchEvent<'a> {
    pub kind: &'a str,
    pub object: &'a [u8],
}

pub fn watch_event(frame: &[u8]) -> Result<WatchEvent<'_>, ProtoError> {
    let mut kind = "";
    let mut raw: &[u8] = &[];
    for_each(frame, |number, value| {
        match number {
            1 => kind = value.text("WatchEvent.type")?,
            2 => for_each(value.bytes("WatchEvent.object")?, |number, value| {
                if number == 1 {
                    raw = value.bytes("RawExtension.raw")?;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(WatchEvent {
        kind,
        object: object_message(raw)?,
    })
}

/// A `meta.v1.Status` (an error response or an ERROR watch event):
/// message (3), reason (4), code (6).
pub fn status(message: &[u8]) -> Result<kube::core::Status, ProtoError> {
    let (mut text, mut reason, mut code) = (String::new(), String::new(), 0u16);
    for_each(message, |number, value| {
        match number {
            3 => text = value.text("Status.message")?.to_string(),
            4 => reason = value.text("Status.reason")?.to_string(),
            6 => code = u16::try_from(value.int32("Status.code")?).unwrap_or(0),
            _ => {}
        }
        Ok(())
    })?;
    Ok(kube::core::Status::failure(&text, &reason).with_code(code))
}

/// The metadata (field 1) of any top-level object: what a BOOKMARK
/// carries.
pub fn metadata_of(object: &[u8], annotations: &[&str]) -> Result<ObjectMeta, ProtoError> {
    let mut meta = ObjectMeta::default();
    for_each(object, |number, value| {
        if number == 1 {
            meta = object_meta(value.bytes("metadata")?, &[], annotations)?;
        }
        Ok(())
    })?;
    Ok(meta)
}

/// Splits complete length-delimited frames off the front of `buffer`.
/// Errors on a frame larger than `max` (a broken stream, not an object:
/// the API server stores nothing near that size).
pub fn next_frame(
    buffer: &mut bytes::BytesMut,
    max: usize,
) -> Result<Option<bytes::Bytes>, ProtoError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if len > max {
        return Err(malformed(format!("watch stream: frame of {len} bytes")));
    }
    if buffer.len() < 4 + len {
        buffer.reserve(4 + len - buffer.len());
        return Ok(None);
    }
    let mut frame = buffer.split_to(4 + len);
    let _ = frame.split_to(4);
    Ok(Some(frame.freeze()))
}

#[cfg(test)]
pub mod encode {
    //! A protobuf writer for tests: builds the messages the API server
    //! sends, field by field.

    pub fn varint(out: &mut Vec<u8>, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn bytes(out: &mut Vec<u8>, number: u32, value: &[u8]) {
        varint(out, u64::from(number) << 3 | 2);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }

    pub fn text(out: &mut Vec<u8>, number: u32, value: &str) {
        bytes(out, number, value.as_bytes());
    }

    pub fn int(out: &mut Vec<u8>, number: u32, value: i64) {
        varint(out, u64::from(number) << 3);
        varint(out, value as u64);
    }

    pub fn envelope(message: &[u8]) -> Vec<u8> {
        let mut out = b"k8s\0".to_vec();
        bytes(&mut out, 2, message);
        out
    }

    /// An ObjectMeta with name, namespace, resourceVersion, labels and
    /// annotations, plus a managedFields entry (which must be skipped).
    pub fn meta(
        name: &str,
        namespace: &str,
        rv: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        text(&mut out, 1, name);
        text(&mut out, 3, namespace);
        text(&mut out, 6, rv);
        for (field, map) in [(11, labels), (12, annotations)] {
            for (k, v) in map {
                let mut entry = Vec::new();
                text(&mut entry, 1, k);
                text(&mut entry, 2, v);
                bytes(&mut out, field, &entry);
            }
        }
        let mut managed = Vec::new();
        text(&mut managed, 1, "kubectl");
        bytes(&mut out, 17, &managed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::encode;
    use super::*;

    #[test]
    fn fields_varints_and_skipping() {
        let mut message = Vec::new();
        encode::int(&mut message, 6, -1); // int32 -1: ten bytes on the wire
        encode::text(&mut message, 3, "hello");
        message.extend_from_slice(&[0x0d, 1, 2, 3, 4]); // field 1, fixed32
        message.extend_from_slice(&[0x11, 1, 2, 3, 4, 5, 6, 7, 8]); // field 2, fixed64
        let mut seen = Vec::new();
        for_each(&message, |number, value| {
            seen.push((number, value));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0].0, 6);
        assert_eq!(seen[0].1.int32("x").unwrap(), -1);
        assert_eq!(seen[1], (3, Value::Bytes(b"hello")));
        assert_eq!(seen[2], (1, Value::Fixed32));
        assert_eq!(seen[3], (2, Value::Fixed64));
    }

    #[test]
    fn truncated_and_malformed_messages_are_errors_not_panics() {
        for bad in [
            &[0x0a, 0x05, b'a'][..], // length past the end
            &[0x08, 0x80][..],       // truncated varint
            &[0x0b][..],             // wire type 3 (groups)
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            assert!(for_each(bad, |_, _| Ok(())).is_err(), "{bad:?}");
        }
        assert!(unwrap_envelope(b"{\"kind\":\"List\"}").is_err());
        let mut text = Vec::new();
        encode::bytes(&mut text, 1, &[0xff, 0xfe]);
        assert!(object_meta(&text, &[], &[]).is_err());
    }

    #[test]
    fn lists_events_and_status() {
        let mut list_meta = Vec::new();
        encode::text(&mut list_meta, 2, "123");
        encode::text(&mut list_meta, 3, "next");
        let mut list_message = Vec::new();
        encode::bytes(&mut list_message, 1, &list_meta);
        encode::bytes(&mut list_message, 2, b"one");
        encode::bytes(&mut list_message, 2, b"two");
        let data = encode::envelope(&list_message);
        let decoded = list(&data).unwrap();
        assert_eq!(decoded.resource_version, "123");
        assert_eq!(decoded.continue_token, "next");
        assert_eq!(decoded.items, [&b"one"[..], &b"two"[..]]);

        let mut status_message = Vec::new();
        encode::text(&mut status_message, 2, "Failure");
        encode::text(&mut status_message, 3, "too old resource version");
        encode::text(&mut status_message, 4, "Expired");
        encode::int(&mut status_message, 6, 410);
        let mut raw = Vec::new();
        encode::bytes(&mut raw, 1, &encode::envelope(&status_message));
        let mut frame = Vec::new();
        encode::text(&mut frame, 1, "ERROR");
        encode::bytes(&mut frame, 2, &raw);
        let event = watch_event(&frame).unwrap();
        assert_eq!(event.kind, "ERROR");
        let status = status(event.object).unwrap();
        assert_eq!(
            (status.code, status.message.as_str(), status.reason.as_str()),
            (410, "too old resource version", "Expired")
        );
    }

    #[test]
    fn metadata_keeps_only_the_wanted_keys() {
        let meta_message = encode::meta(
            "web",
            "shop",
            "77",
            &[("kubernetes.io/service-name", "web"), ("app", "x")],
            &[("k8s.io/initial-events-end", "true")],
        );
        let meta = object_meta(&meta_message, &["kubernetes.io/service-name"], &[]).unwrap();
        assert_eq!(meta.name.as_deref(), Some("web"));
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.resource_version.as_deref(), Some("77"));
        assert_eq!(meta.labels.unwrap().len(), 1);
        assert!(meta.annotations.unwrap().is_empty());
        let mut object = Vec::new();
        encode::bytes(&mut object, 1, &meta_message);
        let bookmark = metadata_of(&object, &["k8s.io/initial-events-end"]).unwrap();
        assert!(
            bookmark
                .annotations
                .unwrap()
                .contains_key("k8s.io/initial-events-end")
        );
    }

    #[test]
    fn frames_are_split_whole() {
        let mut buffer = bytes::BytesMut::new();
        buffer.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(next_frame(&mut buffer, 100).unwrap(), None);
        buffer.extend_from_slice(&[b'c', 0, 0, 0, 0]);
        assert_eq!(
            next_frame(&mut buffer, 100).unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            next_frame(&mut buffer, 100).unwrap().as_deref(),
            Some(&b""[..])
        );
        assert_eq!(next_frame(&mut buffer, 100).unwrap(), None);
        buffer.extend_from_slice(&[0, 0, 1, 0]);
        assert!(next_frame(&mut buffer, 100).is_err());
    }
}
