//! `tenantgate rebalance`: propose moves that even out the shards, and run them one at a time.
//!
//! [`plan`] is the whole policy, a pure function of the shards and the tenants' weights:
//! 1. every tenant of a `draining` shard goes to the least loaded `active` shard it can move
//!    to (heaviest first), so draining plus a rebalance empties a shard;
//! 2. then, among the `active` shards of each kind, a tenant moves from the most to the least
//!    loaded shard while that narrows the gap (its weight is below the gap; the one closest to
//!    half the gap is chosen), until no move helps.
//!
//! Moves stay within one kind of shard (SQLite, PostgreSQL): those are the moves the job can
//! make. `disabled` shards are left alone. The weight of a tenant is 1 (`--by tenants`) or its
//! request count on the edge (`--by requests`: `tenantgate_edge_requests_total`, scraped from
//! the configured `edge.metrics_listen`; one edge's view since it started, and tenants counted
//! under `_other` weigh 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tenantgate_catalog::store::jobs::JobStatus;
use tenantgate_catalog::store::tenants::TenantFilter;
use tenantgate_catalog::{Catalog, ShardStatus};
use tenantgate_config::db_url::Engine;
use tenantgate_config::Config;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use crate::error::AdminError;
use crate::state::AdminState;
use crate::CLI_ACTOR;

/// What a tenant weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Every tenant weighs 1.
    Tenants,
    /// A tenant weighs its requests on the edge.
    Requests,
}

/// A shard as the planner sees it.
#[derive(Debug, Clone)]
pub struct ShardSlot {
    pub name: String,
    pub status: ShardStatus,
    /// Shards of one kind can exchange tenants (`sqlite`, `postgres`).
    pub kind: String,
}

/// A movable tenant (active or suspended) and its weight.
#[derive(Debug, Clone)]
pub struct TenantWeight {
    pub slug: String,
    pub shard: String,
    pub weight: f64,
}

/// One proposed move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedMove {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub weight: f64,
}

/// The moves that drain `draining` shards and even out the `active` ones (see the module docs).
pub fn plan(shards: &[ShardSlot], tenants: &[TenantWeight]) -> Vec<PlannedMove> {
    let mut load: BTreeMap<&str, f64> = shards.iter().map(|s| (s.name.as_str(), 0.0)).collect();
    let mut placed: Vec<(usize, String)> = Vec::new(); // (tenant index, current shard)
    for (i, t) in tenants.iter().enumerate() {
        if let Some(l) = load.get_mut(t.shard.as_str()) {
            *l += t.weight;
            placed.push((i, t.shard.clone()));
        }
    }
    let shard = |name: &str| shards.iter().find(|s| s.name == name);
    let mut moves: Vec<PlannedMove> = Vec::new();
    let record = |moves: &mut Vec<PlannedMove>, t: &TenantWeight, to: &str| match moves
        .iter_mut()
        .find(|m| m.tenant == t.slug)
    {
        Some(m) => m.to = to.to_string(),
        None => moves.push(PlannedMove {
            tenant: t.slug.clone(),
            from: t.shard.clone(),
            to: to.to_string(),
            weight: t.weight,
        }),
    };
    let least_loaded = |load: &BTreeMap<&str, f64>, kind: &str| {
        shards
            .iter()
            .filter(|s| s.status == ShardStatus::Active && s.kind == kind)
            .min_by(|a, b| {
                load[a.name.as_str()]
                    .total_cmp(&load[b.name.as_str()])
                    .then(a.name.cmp(&b.name))
            })
            .map(|s| s.name.clone())
    };

    // 1. Drain, heaviest first.
    let mut draining: Vec<usize> = placed
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| shard(s).is_some_and(|s| s.status == ShardStatus::Draining))
        .map(|(p, _)| p)
        .collect();
    draining.sort_by(|a, b| {
        tenants[placed[*b].0]
            .weight
            .total_cmp(&tenants[placed[*a].0].weight)
    });
    for p in draining {
        let (i, from) = placed[p].clone();
        let kind = shard(&from).map(|s| s.kind.clone()).unwrap_or_default();
        if let Some(to) = least_loaded(&load, &kind) {
            *load.get_mut(from.as_str()).expect("known shard") -= tenants[i].weight;
            *load.get_mut(to.as_str()).expect("known shard") += tenants[i].weight;
            record(&mut moves, &tenants[i], &to);
            placed[p].1 = to;
        }
    }

    // 2. Even out the active shards of each kind. Each move strictly narrows the spread, so
    //    this ends; the bound is a safety net.
    let kinds: Vec<String> = {
        let mut k: Vec<String> = shards.iter().map(|s| s.kind.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    for kind in kinds {
        for _ in 0..tenants.len() * 2 {
            let active: Vec<&ShardSlot> = shards
                .iter()
                .filter(|s| s.status == ShardStatus::Active && s.kind == kind)
                .collect();
            let (Some(max), Some(min)) = (
                active.iter().max_by(|a, b| {
                    load[a.name.as_str()]
                        .total_cmp(&load[b.name.as_str()])
                        .then(b.name.cmp(&a.name))
                }),
                active.iter().min_by(|a, b| {
                    load[a.name.as_str()]
                        .total_cmp(&load[b.name.as_str()])
                        .then(a.name.cmp(&b.name))
                }),
            ) else {
                break;
            };
            let gap = load[max.name.as_str()] - load[min.name.as_str()];
            let candidate = placed
                .iter()
                .enumerate()
                .filter(|(_, (i, s))| {
                    *s == max.name && tenants[*i].weight > 0.0 && tenants[*i].weight < gap
                })
                .min_by(|(_, (a, _)), (_, (b, _))| {
                    let da = (tenants[*a].weight - gap / 2.0).abs();
                    let db = (tenants[*b].weight - gap / 2.0).abs();
                    da.total_cmp(&db)
                        .then(tenants[*a].slug.cmp(&tenants[*b].slug))
                })
                .map(|(p, _)| p);
            let Some(p) = candidate else { break };
            let i = placed[p].0;
            let to = min.name.clone();
            *load.get_mut(max.name.as_str()).expect("known shard") -= tenants[i].weight;
            *load.get_mut(to.as_str()).expect("known shard") += tenants[i].weight;
            record(&mut moves, &tenants[i], &to);
            placed[p].1 = to;
        }
    }
    // A tenant planned away and back again does not move.
    moves.retain(|m| m.from != m.to);
    moves
}

/// The proposal for the catalog as it is now (weights as `by` says).
pub async fn propose(
    config: &Config,
    catalog: &Catalog,
    by: Balance,
) -> Result<Vec<PlannedMove>, AdminError> {
    let shards: Vec<ShardSlot> = catalog
        .shards()
        .await?
        .into_iter()
        .map(|s| {
            let kind = match Engine::of_url(&s.database_url) {
                Ok(Engine::Postgres) => "postgres",
                Ok(Engine::Sqlite) => "sqlite",
                Err(_) => "unknown",
            };
            ShardSlot {
                name: s.name,
                status: s.status,
                kind: kind.to_string(),
            }
        })
        .collect();
    let requests = match by {
        Balance::Tenants => None,
        Balance::Requests => Some(edge_requests(config).await?),
    };
    let mut tenants = Vec::new();
    let mut cursor = None;
    loop {
        let page = catalog
            .list_tenants(&TenantFilter {
                cursor: cursor.clone(),
                limit: 500,
                ..TenantFilter::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.slug.clone());
        for t in page {
            if !matches!(t.status, TenantStatus::Active | TenantStatus::Suspended) {
                continue;
            }
            let weight = match &requests {
                None => 1.0,
                Some(counts) => counts.get(&t.slug).copied().unwrap_or(0.0),
            };
            tenants.push(TenantWeight {
                slug: t.slug,
                shard: t.shard,
                weight,
            });
        }
    }
    Ok(plan(&shards, &tenants))
}

/// Requests per tenant slug from the edge's metrics endpoint (`edge.metrics_listen`).
async fn edge_requests(config: &Config) -> Result<BTreeMap<String, f64>, AdminError> {
    let url = format!("http://{}/metrics", config.edge.metrics_listen);
    let text = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            AdminError::Conflict(format!(
                "could not read the edge's metrics at {url} (edge.metrics_listen): {e}"
            ))
        })?
        .text()
        .await
        .map_err(|e| {
            AdminError::Conflict(format!("could not read the edge's metrics at {url}: {e}"))
        })?;
    Ok(requests_by_tenant(&text))
}

/// Sum `tenantgate_edge_requests_total` by its `tenant` label in Prometheus text.
fn requests_by_tenant(text: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tenantgate_edge_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let tenant = labels.split(',').find_map(|l| {
            l.strip_prefix("tenant=\"")
                .and_then(|v| v.strip_suffix('"'))
        });
        if let (Some(tenant), Ok(value)) = (tenant, value.trim().parse::<f64>()) {
            *counts.entry(tenant.to_string()).or_insert(0.0) += value;
        }
    }
    counts
}

/// Run `moves` one at a time through the admin worker (queued like the API's moves, actor
/// `cli`), each waited for up to `each`; stops at the first move that does not succeed.
/// Returns the job of every move started.
pub async fn run(
    config: &Config,
    catalog: &Catalog,
    moves: &[PlannedMove],
    each: Duration,
) -> Result<Vec<Uuid>, AdminError> {
    let state = AdminState::new(Arc::new(config.clone()), catalog.clone());
    let mut jobs = Vec::new();
    for m in moves {
        let job = crate::api::tenants::start_move(&state, CLI_ACTOR, &m.tenant, &m.to).await?;
        jobs.push(job);
        let done = crate::backups::wait_for_job(catalog, job, each).await?;
        if done.status != JobStatus::Succeeded {
            return Err(AdminError::Conflict(format!(
                "moving {} to {} failed: {}",
                m.tenant,
                m.to,
                done.error.unwrap_or_default()
            )));
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(name: &str, status: ShardStatus, kind: &str) -> ShardSlot {
        ShardSlot {
            name: name.into(),
            status,
            kind: kind.into(),
        }
    }

    fn tenants(on: &[(&str, &str, f64)]) -> Vec<TenantWeight> {
        on.iter()
            .map(|(slug, shard, weight)| TenantWeight {
                slug: slug.to_string(),
                shard: shard.to_string(),
                weight: *weight,
            })
            .collect()
    }

    fn loads(
        shards: &[ShardSlot],
        ts: &[TenantWeight],
        moves: &[PlannedMove],
    ) -> BTreeMap<String, f64> {
        let mut load: BTreeMap<String, f64> =
            shards.iter().map(|s| (s.name.clone(), 0.0)).collect();
        for t in ts {
            let at = moves
                .iter()
                .find(|m| m.tenant == t.slug)
                .map_or(&t.shard, |m| &m.to);
            *load.get_mut(at).unwrap() += t.weight;
        }
        load
    }

    #[test]
    fn evens_out_tenant_counts() {
        let shards = [
            shard("a", ShardStatus::Active, "pg"),
            shard("b", ShardStatus::Active, "pg"),
            shard("c", ShardStatus::Active, "pg"),
        ];
        let ts = tenants(&[
            ("t1", "a", 1.0),
            ("t2", "a", 1.0),
            ("t3", "a", 1.0),
            ("t4", "a", 1.0),
            ("t5", "a", 1.0),
            ("t6", "b", 1.0),
        ]);
        let moves = plan(&shards, &ts);
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert!(moves.iter().all(|m| m.from == "a"));
        let load = loads(&shards, &ts, &moves);
        assert_eq!(load.values().copied().collect::<Vec<_>>(), [2.0, 2.0, 2.0]);
    }

    #[test]
    fn a_balanced_fleet_needs_no_move() {
        let shards = [
            shard("a", ShardStatus::Active, "pg"),
            shard("b", ShardStatus::Active, "pg"),
        ];
        let ts = tenants(&[("t1", "a", 1.0), ("t2", "b", 1.0), ("t3", "a", 1.0)]);
        assert!(
            plan(&shards, &ts).is_empty(),
            "a gap of one tenant cannot narrow"
        );
    }

    #[test]
    fn draining_empties_the_shard() {
        let shards = [
            shard("a", ShardStatus::Active, "pg"),
            shard("b", ShardStatus::Draining, "pg"),
            shard("c", ShardStatus::Active, "pg"),
        ];
        let ts = tenants(&[
            ("t1", "b", 1.0),
            ("t2", "b", 1.0),
            ("t3", "b", 1.0),
            ("t4", "a", 1.0),
        ]);
        let moves = plan(&shards, &ts);
        let load = loads(&shards, &ts, &moves);
        assert_eq!(load["b"], 0.0, "{moves:?}");
        assert_eq!(load["a"] + load["c"], 4.0);
        assert!((load["a"] - load["c"]).abs() <= 1.0);
        assert!(moves.iter().all(|m| m.to != "b"));
    }

    #[test]
    fn moves_stay_within_a_kind_and_skip_disabled_shards() {
        let shards = [
            shard("pg1", ShardStatus::Active, "postgres"),
            shard("lite", ShardStatus::Active, "sqlite"),
            shard("pg2", ShardStatus::Disabled, "postgres"),
        ];
        let ts = tenants(&[("t1", "pg1", 1.0), ("t2", "pg1", 1.0), ("t3", "pg1", 1.0)]);
        assert!(plan(&shards, &ts).is_empty());
    }

    #[test]
    fn weighs_by_requests() {
        let shards = [
            shard("a", ShardStatus::Active, "pg"),
            shard("b", ShardStatus::Active, "pg"),
        ];
        // One hot tenant alone on a; the cold ones together on b stay, a cold one does not
        // join the hot one unless that narrows the gap.
        let ts = tenants(&[
            ("hot", "a", 100.0),
            ("c1", "b", 10.0),
            ("c2", "b", 10.0),
            ("c3", "a", 30.0),
        ]);
        let moves = plan(&shards, &ts);
        assert_eq!(
            moves,
            [PlannedMove {
                tenant: "c3".into(),
                from: "a".into(),
                to: "b".into(),
                weight: 30.0
            }]
        );
        assert!(plan(&shards, &tenants(&[("hot", "a", 100.0), ("c1", "b", 1.0)])).is_empty());
    }

    #[test]
    fn reads_request_counts_from_prometheus_text() {
        let text = "# HELP x\ntenantgate_edge_requests_total{code=\"200\",shard=\"a\",tenant=\"acme\"} 5\n\
                    tenantgate_edge_requests_total{code=\"404\",shard=\"a\",tenant=\"acme\"} 2\n\
                    tenantgate_edge_requests_total{code=\"200\",shard=\"b\",tenant=\"globex\"} 1\n\
                    tenantgate_edge_request_duration_seconds_count{shard=\"a\"} 8\n";
        let counts = requests_by_tenant(text);
        assert_eq!(counts["acme"], 7.0);
        assert_eq!(counts["globex"], 1.0);
        assert_eq!(counts.len(), 2);
    }
}
