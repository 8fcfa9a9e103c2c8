//! ExternalName answers whose CNAME chain leaves the zone: the Service's
//! CNAME, followed by the target's own records, as CoreDNS gives them —
//! links inside the zone from the zone, the rest through the upstream
//! resolvers. (A chain that stays in the zone never gets here: the zone
//! writes it into one response itself, allocation-free.)
//!
//! Owns: following a CNAME chain (at most [`MAX_CHAIN`] links, so two
//! ExternalName Services naming each other end in SERVFAIL, not a loop) and
//! composing the one response. Built with hickory-proto, unlike the hot
//! path: a chase already costs a second lookup, often an upstream round
//! trip, and a general message type keeps the upstream's records exact.
//! May not touch: sockets (the server sends the bytes) or the index writer.

use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::answer::Zone;
use super::forward::UpstreamError;
use super::resolve::Resolver;
use super::server::{Handled, handle_packet};
use super::wire::{CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD, Response};
use crate::index::Index;

/// CNAME links followed for one question; more is a loop or abuse.
const MAX_CHAIN: usize = 8;

/// Why a chase has no answer; the client gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChaseError {
    #[error("the query is not a DNS message")]
    BadQuery,
    #[error("external name {0:?} is not a DNS name")]
    BadTarget(Arc<str>),
    #[error("more than {MAX_CHAIN} CNAME links")]
    TooLong,
    #[error("upstream failed: {}", .0.label())]
    Upstream(UpstreamError),
    #[error("the answer for the target is not a DNS message")]
    BadAnswer,
}

impl ChaseError {
    /// The metric label of an upstream failure, else None.
    pub(crate) fn upstream_label(&self) -> Option<&'static str> {
        match self {
            Self::Upstream(error) => Some(error.label()),
            _ => None,
        }
    }
}

/// Where a chase finds the target's records.
pub(crate) struct Chaser<'a> {
    pub(crate) zone: &'a Zone,
    pub(crate) index: &'a Index,
    /// Outside names go through the cache like any forwarded query.
    pub(crate) resolver: &'a Arc<Resolver>,
}

impl Chaser<'_> {
    /// The whole response to `packet`, a question whose name is an
    /// ExternalName Service with external name `target`.
    pub(crate) async fn answer(
        &self,
        packet: &[u8],
        target: Arc<str>,
        over_udp: bool,
    ) -> Result<Vec<u8>, ChaseError> {
        let asked = Message::from_vec(packet).map_err(|_| ChaseError::BadQuery)?;
        let question = asked.queries.first().ok_or(ChaseError::BadQuery)?.clone();
        let mut response = Message::response(asked.metadata.id, asked.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = asked.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = asked.metadata.checking_disabled;
        response.add_query(question.clone());

        let ttl = self.zone.ttl;
        let mut owner = question.name().clone();
        let mut next = target;
        let final_answer = loop {
            if response.answers.len() >= MAX_CHAIN {
                return Err(ChaseError::TooLong);
            }
            let name = Name::from_ascii(format!("{next}."))
                .map_err(|_| ChaseError::BadTarget(next.clone()))?;
            response.add_answer(Record::from_rdata(
                owner,
                ttl,
                RData::CNAME(CNAME(name.clone())),
            ));
            let (answer, chained) = self.lookup(&name, &question).await?;
            match chained {
                Some(further) => {
                    owner = name;
                    next = further;
                }
                None => break answer,
            }
        };
        let mut final_answer = final_answer;
        response.metadata.response_code = final_answer.metadata.response_code;
        // Upstream cut its answer short: so is ours, and the client retries
        // over TCP, where the chase goes over TCP too.
        response.metadata.truncation = final_answer.metadata.truncation;
        response.add_answers(final_answer.answers.drain(..));
        // NXDOMAIN or NODATA for the target: its SOA says for how long.
        if response
            .answers
            .iter()
            .all(|r| r.record_type() == RecordType::CNAME)
        {
            response.add_authorities(final_answer.authorities.drain(..));
        }
        // SRV targets' addresses and the like (EDNS is apart, in `edns`).
        response.add_additionals(final_answer.additionals.drain(..));
        let limit = match &asked.edns {
            Some(edns) => {
                let mut ours = Edns::new();
                ours.set_max_payload(EDNS_UDP_PAYLOAD);
                response.set_edns(ours);
                edns.max_payload()
                    .clamp(CLASSIC_UDP_PAYLOAD, EDNS_UDP_PAYLOAD)
            }
            None => CLASSIC_UDP_PAYLOAD,
        };
        let bytes = response.to_vec().map_err(|_| ChaseError::BadAnswer)?;
        if over_udp && bytes.len() > usize::from(limit) {
            // Never a silent partial answer: the client retries over TCP.
            let mut truncated = response.truncate();
            truncated.metadata.truncation = true;
            return truncated.to_vec().map_err(|_| ChaseError::BadAnswer);
        }
        Ok(bytes)
    }

    /// The records of `name` of the asked type: from the zone, or from
    /// upstream. The second value is a further external name when `name`
    /// is itself an ExternalName Service.
    async fn lookup(
        &self,
        name: &Name,
        question: &Query,
    ) -> Result<(Message, Option<Arc<str>>), ChaseError> {
        let mut query = Message::query();
        query.metadata.id = rand::random();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name.clone(), question.query_type()));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_PAYLOAD);
        query.set_edns(edns);
        let packet = query.to_vec().map_err(|_| ChaseError::BadQuery)?;
        if self.zone.contains(&name.to_ascii()) {
            let mut response = Response::default();
            let mut rng = SmallRng::from_rng(&mut rand::rng());
            let snapshot = self.index.load();
            // Not over UDP: the whole answer, the client's limit is applied
            // to the composed response.
            let (handled, _) = handle_packet(
                self.zone,
                &snapshot,
                &packet,
                false,
                &mut response,
                &mut rng,
            );
            match handled {
                Handled::Reply => {
                    let answer =
                        Message::from_vec(&response.buf).map_err(|_| ChaseError::BadAnswer)?;
                    return Ok((answer, None));
                }
                Handled::Chase(further) => return Ok((Message::query(), Some(further))),
                // A namespace the agent does not watch: upstream knows.
                Handled::Forward => {}
                Handled::Drop => return Err(ChaseError::BadQuery),
            }
        }
        let query = crate::dns::wire::parse_query(&packet).map_err(|_| ChaseError::BadQuery)?;
        // Not over UDP: the whole answer; the client's limit is applied to
        // the composed response.
        let (bytes, _) = self
            .resolver
            .resolve(&query, false)
            .await
            .map_err(ChaseError::Upstream)?;
        let answer = Message::from_vec(&bytes).map_err(|_| ChaseError::BadAnswer)?;
        if answer.metadata.response_code == ResponseCode::ServFail {
            return Err(ChaseError::Upstream(UpstreamError::BadResponse));
        }
        if answer.metadata.message_type != MessageType::Response {
            return Err(ChaseError::BadAnswer);
        }
        Ok((answer, None))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dns::wire::tests::query_packet;
    use crate::index::{Change, Scope, ServiceKey, ServiceObject, ServiceType};

    fn external(name: &str, target: &str) -> ServiceObject {
        ServiceObject {
            service_type: ServiceType::ExternalName,
            headless: false,
            external_name: Some(target.into()),
            ..ServiceObject::headless(ServiceKey::new("ns", name))
        }
    }

    fn index(services: Vec<ServiceObject>) -> Index {
        let index = Index::default();
        index.expect_parts(["test"]);
        index.apply(services.into_iter().map(Change::ApplyService));
        index.replace(&Scope::Namespace("none".into()), None, None, "test");
        index
    }

    async fn chase(index: &Index, name: &str, target: &str) -> Result<Message, ChaseError> {
        chase_type(index, name, target, RecordType::A).await
    }

    async fn chase_type(
        index: &Index,
        name: &str,
        target: &str,
        record_type: RecordType,
    ) -> Result<Message, ChaseError> {
        let zone = Zone::new("cluster.local", 5);
        let forwarder =
            crate::dns::forward::Forwarder::new(Vec::new(), &[], Duration::from_millis(100));
        let metrics = Arc::new(crate::dns::metrics::DnsMetrics::register(
            &mut Default::default(),
        ));
        let resolver = Arc::new(Resolver::new(
            &crate::dns::CacheConfig::default(),
            forwarder,
            metrics,
        ));
        let chaser = Chaser {
            zone: &zone,
            index,
            resolver: &resolver,
        };
        let packet = query_packet(name, record_type, Some(1232));
        let bytes = chaser.answer(&packet, target.into(), true).await?;
        Ok(Message::from_vec(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_in_zone_target_is_answered_from_the_zone() {
        let web = ServiceObject {
            headless: false,
            cluster_ips: ["10.96.0.10".parse().unwrap()].into(),
            ..ServiceObject::headless(ServiceKey::new("ns", "web"))
        };
        let index = index(vec![
            web,
            external("alias", "web.ns.svc.cluster.local"),
            external("alias2", "alias.ns.svc.cluster.local"),
        ]);
        let answer = chase(
            &index,
            "Alias2.ns.svc.cluster.local.",
            "alias.ns.svc.cluster.local",
        )
        .await
        .unwrap();
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        // The question as asked, letter case and all.
        assert_eq!(
            answer.queries[0].name().to_ascii(),
            "Alias2.ns.svc.cluster.local."
        );
        let chain: Vec<_> = answer
            .answers
            .iter()
            .map(|r| (r.name.to_ascii().to_lowercase(), r.data.to_string()))
            .collect();
        assert_eq!(
            chain,
            [
                (
                    "alias2.ns.svc.cluster.local.".to_string(),
                    "alias.ns.svc.cluster.local.".to_string()
                ),
                (
                    "alias.ns.svc.cluster.local.".into(),
                    "web.ns.svc.cluster.local.".into()
                ),
                ("web.ns.svc.cluster.local.".into(), "10.96.0.10".into()),
            ]
        );
        assert!(answer.edns.is_some());

        // A target that does not exist: NXDOMAIN, its SOA in Authority.
        let missing = chase(
            &index,
            "gone.ns.svc.cluster.local.",
            "nope.ns.svc.cluster.local",
        )
        .await
        .unwrap();
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(missing.answers.len(), 1);
        assert_eq!(missing.authorities[0].record_type(), RecordType::SOA);
    }

    #[tokio::test]
    async fn the_targets_additional_records_come_along() {
        let index = index(vec![
            ServiceObject {
                headless: false,
                cluster_ips: ["10.96.0.10".parse().unwrap()].into(),
                ports: vec![crate::index::objects::ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: crate::index::objects::Protocol::Tcp,
                    target_port: None,
                }],
                ..ServiceObject::headless(ServiceKey::new("ns", "web"))
            },
            external("alias", "web.ns.svc.cluster.local"),
        ]);
        let answer = chase_type(
            &index,
            "alias.ns.svc.cluster.local.",
            "web.ns.svc.cluster.local",
            RecordType::SRV,
        )
        .await
        .unwrap();
        assert_eq!(answer.answers.len(), 2, "CNAME and SRV: {answer:?}");
        assert_eq!(
            answer.additionals.len(),
            1,
            "the SRV target's address: {answer:?}"
        );
        assert_eq!(answer.additionals[0].data.to_string(), "10.96.0.10");
    }

    #[tokio::test]
    async fn loops_and_failures_end_in_an_error() {
        let index = index(vec![
            external("a", "b.ns.svc.cluster.local"),
            external("b", "a.ns.svc.cluster.local"),
        ]);
        let looped = chase(&index, "a.ns.svc.cluster.local.", "b.ns.svc.cluster.local").await;
        assert!(matches!(looped, Err(ChaseError::TooLong)), "{looped:?}");
        let outside = chase(&index, "x.ns.svc.cluster.local.", "www.example.org").await;
        assert!(
            matches!(
                outside,
                Err(ChaseError::Upstream(UpstreamError::NoUpstream))
            ),
            "{outside:?}"
        );
        let bad = chase(&index, "x.ns.svc.cluster.local.", "bad name").await;
        assert!(matches!(bad, Err(ChaseError::BadTarget(_))), "{bad:?}");
    }
}
