//! `GET /v1/pick/{namespace}/{name}?port=NAME[&key=K]`: one endpoint.
//!
//! Without `key`, smooth weighted round-robin (or weighted random with
//! `strategy=random`); with it, weighted rendezvous hashing (the same key
//! keeps landing on the same endpoint). Only the most preferred topology
//! tier is picked from. `port` may be
//! left out when the Service has only one port.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::query::{self, ServicePath};
use super::{ApiError, AppState, ErrorCode};
use crate::balance::{Candidate, pick_by_key, pick_weighted_random};
use crate::index::Endpoint;

#[derive(Serialize)]
struct Picked<'a> {
    namespace: &'a str,
    name: &'a str,
    revision: u64,
    /// `ip:port`, with brackets for IPv6: ready for a dialer.
    address: String,
    ip: std::net::IpAddr,
    port: Option<u16>,
    #[serde(rename = "portName")]
    port_name: &'a str,
    endpoint: &'a Endpoint,
}

pub async fn pick(
    State(state): State<AppState>,
    ServicePath(key): ServicePath,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = query::parse(raw.as_deref(), &["port", "key", "strategy"])?;
    let snapshot = state.index.load();
    // As for the Service's answer: before the first sync a Service may lack
    // slices still on their way, so no pick from a part of its endpoints.
    if !snapshot.synced {
        return Err(ApiError::not_synced());
    }
    let Some(service) = snapshot.services.get(&key) else {
        return Err(ApiError::service_not_found(&key));
    };

    let port_names: Vec<&str> = {
        let mut names: Vec<&str> = service.ports.iter().map(|p| &*p.name).collect();
        for endpoint in &service.endpoints {
            names.extend(endpoint.ports.iter().map(|p| &*p.name));
        }
        names.sort_unstable();
        names.dedup();
        names
    };
    let port_name: &str = match params.get("port") {
        Some(name) => {
            if !port_names.contains(&name.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::NoSuchPort,
                    format!(
                        "service {key} has no port named {name:?} (ports: {})",
                        describe_ports(&port_names)
                    ),
                ));
            }
            port_names
                .iter()
                .find(|n| **n == name.as_str())
                .copied()
                .unwrap_or_default()
        }
        None if port_names.len() <= 1 => port_names.first().copied().unwrap_or(""),
        None => {
            return Err(ApiError::bad_request(format!(
                "service {key} has several ports; choose one with ?port= ({})",
                describe_ports(&port_names)
            )));
        }
    };

    // Candidates: usable endpoints that have the port (all of them when the
    // Service has no ports at all), in the most preferred tier present (the
    // index has already applied the panic rule to tiers).
    let mut chosen: Vec<(&Endpoint, Option<u16>, String)> = service
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let port = endpoint.port(port_name, None).map(|p| p.port);
            if port.is_none() && !port_names.is_empty() {
                return None;
            }
            let address = match (endpoint.ip(), port) {
                (ip @ std::net::IpAddr::V6(_), Some(port)) => format!("[{ip}]:{port}"),
                (ip, Some(port)) => format!("{ip}:{port}"),
                (ip, None) => ip.to_string(),
            };
            Some((endpoint, port, address))
        })
        .collect();
    if let Some(best) = chosen.iter().map(|(e, _, _)| e.priority).min() {
        chosen.retain(|(e, _, _)| e.priority == best);
    }
    let candidates: Vec<Candidate<'_>> = chosen
        .iter()
        .map(|(endpoint, _, address)| Candidate {
            id: address,
            weight: endpoint.weight,
        })
        .collect();
    let picked = match (
        params.get("key"),
        params.get("strategy").map(String::as_str),
    ) {
        (Some(hash_key), None | Some("hash")) => pick_by_key(&candidates, hash_key),
        (None, None | Some("round-robin")) => {
            state
                .pickers
                .round_robin(&key, port_name, service.revision, &candidates)
        }
        (None, Some("random")) => pick_weighted_random(&candidates, &mut rand::rng()),
        (None, Some("hash")) => {
            return Err(ApiError::bad_request("strategy=hash needs key="));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "key= picks by consistent hash; drop strategy=",
            ));
        }
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "invalid strategy {other:?}: use round-robin, random or hash"
            )));
        }
    };
    let Some(i) = picked else {
        return Err(ApiError::new(
            ErrorCode::NoEndpoints,
            format!("service {key} has no usable endpoint for port {port_name:?}"),
        ));
    };
    let (endpoint, port, address) = &chosen[i];
    Ok(Json(Picked {
        namespace: &key.namespace,
        name: &key.name,
        revision: service.revision,
        address: address.clone(),
        ip: endpoint.ip(),
        port: *port,
        port_name,
        endpoint,
    })
    .into_response())
}

fn describe_ports(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| {
            if n.is_empty() {
                "\"\" (unnamed)".to_string()
            } else {
                n.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
