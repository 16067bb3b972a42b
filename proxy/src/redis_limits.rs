//! Fleet-wide per-tenant rate limits (`edge.limits_backend = "redis"`), without Redis on any
//! request's path.
//!
//! Redis holds one token bucket per tenant (`tenantgate:limit:<tenant id>`), refilled at the
//! tenant's rps up to its burst and changed only by [`SETTLE_SCRIPT`], atomically, on Redis's own
//! clock. Each edge serves a tenant from a local allowance of tokens leased from that bucket
//! ([`Lease`]): a request takes a token with one atomic operation, or is refused when none is
//! left. Every [`SETTLE_INTERVAL`] the [`Settler`] settles all active tenants in one pipelined
//! round trip: it asks for about two intervals' worth of the tenant's recent demand at this
//! edge, hands back tokens it holds beyond that, and charges what was admitted without a lease.
//! Tokens are conserved, so however the load spreads over the edges, the fleet admits the
//! tenant's rate (plus one burst), whatever the number of edges.
//!
//! A tenant with no live lease at this edge (its first requests here, or after a quiet spell)
//! is admitted by a local limiter of `limit / fleet_size`; what it admits is charged to the
//! bucket at the next settle, so it is not extra.
//!
//! When a settle fails or takes longer than [`SETTLE_TIMEOUT`] (Redis down, or a partition
//! that drops packets without a reset), the edge falls back: every tenant is limited locally to
//! `limit / fleet_size` until a reconnect succeeds. Each transition is logged once and counted
//! (`tenantgate_edge_limits_fallback_total`, gauge `tenantgate_edge_limits_fallback`); no
//! request waits for Redis or fails because of it.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tenantgate_config::RedisUrl;
use tenantgate_contract::RateLimit;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::rate_limit::{Decision, Gcra, Limiters};

/// How often each edge settles its leases with Redis. Shorter leases follow load shifts
/// between edges faster; longer ones cost fewer round trips. 100 ms holds a tenant's
/// accuracy within a few percent at 3 edges for one round trip per edge per 100 ms.
pub const SETTLE_INTERVAL: Duration = Duration::from_millis(100);

/// A settle (one pipelined round trip) slower than this counts as Redis unreachable: a
/// partition that drops packets must not leave the edge waiting on TCP's own timeouts.
pub const SETTLE_TIMEOUT: Duration = Duration::from_millis(250);

/// Time between reconnect attempts while falling back.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// A lease lives this many settle intervals after its last renewal (a tenant quiet for that
/// long starts again from the local share; its tokens went back at its first quiet settle).
/// Long enough that settles late by a busy machine do not drop a busy tenant to the share.
const LEASE_INTERVALS: u32 = 10;

/// The token bucket of one tenant, settled atomically on Redis's clock.
///
/// `KEYS[1]`: the bucket. `ARGV`: rps, burst, tokens wanted, tokens to charge (admitted without
/// a lease; negative to hand tokens back). Returns the tokens granted and those left.
/// The bucket may go as low as `-burst` (charges for admissions already made), and expires once
/// it would be full again anyway.
pub const SETTLE_SCRIPT: &str = r#"
local rps = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local charge = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = tokens + (now - at) * rps / 1000000
end
tokens = math.min(tokens, burst) - charge
tokens = math.min(math.max(tokens, -burst), burst)
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(2000 * burst / rps) + 1000)
return {granted, math.floor(tokens)}
"#;

/// Where an edge's limits come from right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Leases settled with Redis.
    Redis = 0,
    /// Redis unreachable: `limit / fleet_size` per edge.
    Fallback = 1,
}

/// What every tenant's [`Lease`] and the [`Settler`] share: the mode and the fleet size.
#[derive(Debug)]
pub struct Fleet {
    mode: AtomicU8,
    fleet_size: u32,
    /// The origin of the leases' expiry times.
    base: Instant,
}

impl Fleet {
    /// Shared state for an edge in a fleet of `fleet_size`, falling back until the first
    /// settle succeeds.
    pub fn new(fleet_size: u32) -> Arc<Fleet> {
        Arc::new(Fleet {
            mode: AtomicU8::new(Mode::Fallback as u8),
            fleet_size: fleet_size.max(1),
            base: Instant::now(),
        })
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        if self.mode.load(Ordering::Acquire) == Mode::Redis as u8 {
            Mode::Redis
        } else {
            Mode::Fallback
        }
    }

    /// This edge's part of a tenant's limit while Redis is unreachable (rounded up, at least 1).
    pub fn share(&self, limit: RateLimit) -> RateLimit {
        RateLimit {
            rps: limit.rps.div_ceil(self.fleet_size).max(1),
            burst: limit.burst.div_ceil(self.fleet_size).max(1),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_nanos() as u64
    }
}

/// One tenant's allowance at this edge, leased from its bucket in Redis.
#[derive(Debug)]
pub struct Lease {
    fleet: Arc<Fleet>,
    /// `limit / fleet_size`: the limiter while falling back or without a live lease.
    local: Gcra,
    /// Leased tokens not yet spent.
    tokens: AtomicI64,
    /// Requests admitted from `tokens` since the last settle.
    taken: AtomicU64,
    /// Requests admitted by `local` while Redis was reachable, to charge at the next settle.
    borrowed: AtomicU64,
    /// Requests refused since the last settle (demand the lease did not cover).
    refused: AtomicU64,
    /// Until when (nanoseconds after `fleet.base`) `tokens` may be spent; 0: no lease.
    live_until: AtomicU64,
}

impl Lease {
    /// A tenant's lease, none held yet.
    pub fn new(fleet: &Arc<Fleet>, limit: RateLimit) -> Lease {
        Lease {
            local: Gcra::new(fleet.share(limit)),
            fleet: fleet.clone(),
            tokens: AtomicI64::new(0),
            taken: AtomicU64::new(0),
            borrowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            live_until: AtomicU64::new(0),
        }
    }

    /// Apply a changed tenant limit to the local share (the bucket in Redis takes it at the
    /// next settle).
    pub fn set_limit(&self, limit: RateLimit) {
        self.local.set_limit(self.fleet.share(limit));
    }

    /// Take one request at `now` under the tenant's `limit`. Runs on the request path: atomic
    /// operations only, never Redis.
    pub fn check(&self, limit: RateLimit, now: Instant) -> Decision {
        if self.fleet.mode() == Mode::Fallback {
            return self.local.check(now);
        }
        if self.fleet.nanos(now) >= self.live_until.load(Ordering::Acquire) {
            // No lease here yet (or it lapsed): the local share admits, and the settle that
            // this demand triggers charges the bucket for it.
            let decision = self.local.check(now);
            let counter = if decision.allowed {
                &self.borrowed
            } else {
                &self.refused
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return decision;
        }
        let taken = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t > 0).then(|| t - 1)
            });
        let interval_secs = |tokens: u64| tokens.div_ceil(u64::from(limit.rps)).max(1);
        match taken {
            Ok(before) => {
                self.taken.fetch_add(1, Ordering::Relaxed);
                let remaining = u32::try_from(before - 1)
                    .unwrap_or(u32::MAX)
                    .min(limit.burst);
                Decision {
                    allowed: true,
                    limit: limit.burst,
                    remaining,
                    reset_secs: interval_secs(u64::from(limit.burst - remaining)),
                    retry_after_secs: 0,
                }
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Decision {
                    allowed: false,
                    limit: limit.burst,
                    remaining: 0,
                    reset_secs: interval_secs(u64::from(limit.burst)),
                    // The next settle (at most one interval away) may bring tokens.
                    retry_after_secs: 1,
                }
            }
        }
    }

    /// What to ask of the bucket for this lease, resetting the counters; `None` when the
    /// tenant was quiet here and holds nothing.
    fn claim(&self, limit: RateLimit) -> Option<Claim> {
        let taken = self.taken.swap(0, Ordering::AcqRel);
        let borrowed = self.borrowed.swap(0, Ordering::AcqRel);
        let refused = self.refused.swap(0, Ordering::AcqRel);
        let demand = (taken + borrowed + refused).min(u64::from(limit.burst)) as i64;
        // Keep about two intervals of this edge's recent demand, and at least this edge's share
        // of the burst while the tenant is active here: enough to cover the next settle's round
        // trip and a burst arriving at this edge, little enough that tokens idle here are not
        // missed elsewhere. A quiet tenant keeps nothing.
        let keep = if demand == 0 {
            0
        } else {
            (2 * demand).max(i64::from(self.fleet.share(limit).burst))
        };
        // One atomic step, so that tokens taken meanwhile are never handed back too.
        let held = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held > keep).then_some(keep)
            })
            .unwrap_or_else(|held| held);
        let handed_back = (held - keep).max(0);
        if demand == 0 && handed_back == 0 && borrowed == 0 {
            return None;
        }
        Some(Claim {
            want: (keep - held.min(keep)).min(i64::from(limit.burst)),
            charge: borrowed as i64 - handed_back,
            renew: demand > 0,
        })
    }

    /// Apply a settle's answer at `now`.
    fn granted(&self, claim: &Claim, granted: i64, now: Instant) {
        if granted > 0 {
            self.tokens.fetch_add(granted, Ordering::AcqRel);
        }
        if claim.renew {
            let until =
                self.fleet.nanos(now) + (SETTLE_INTERVAL * LEASE_INTERVALS).as_nanos() as u64;
            self.live_until.store(until, Ordering::Release);
        }
    }

    /// Forget the lease and its counters: after a fallback, what was held before is stale.
    fn reset(&self) {
        self.tokens.store(0, Ordering::Release);
        self.live_until.store(0, Ordering::Release);
        self.taken.store(0, Ordering::Release);
        self.borrowed.store(0, Ordering::Release);
        self.refused.store(0, Ordering::Release);
    }
}

/// One tenant's request in a settle.
#[derive(Debug, Clone, Copy)]
struct Claim {
    want: i64,
    charge: i64,
    /// The tenant had demand here: extend its lease.
    renew: bool,
}

/// The fallback metrics the settler moves.
#[derive(Debug, Clone)]
pub struct FallbackMetrics {
    /// `tenantgate_edge_limits_fallback`: 1 while falling back.
    pub active: IntGauge,
    /// `tenantgate_edge_limits_fallback_total`: transitions into fallback.
    pub entered: IntCounter,
}

/// The background task that settles every active lease with Redis and switches between
/// [`Mode::Redis`] and [`Mode::Fallback`].
pub struct Settler {
    client: redis::Client,
    fleet: Arc<Fleet>,
    limiters: Arc<Limiters>,
    metrics: FallbackMetrics,
    script: redis::Script,
    connection: Option<redis::aio::MultiplexedConnection>,
    /// The first mode was logged (the fleet starts in fallback without having announced it).
    announced: bool,
}

/// Why a settle or a connection attempt failed. Never holds the URL.
#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Settler {
    /// A settler for `fleet`'s leases in `limiters`, connecting to `url`. Fails only for a URL
    /// the client cannot use (validated config never has one).
    pub fn new(
        url: &RedisUrl,
        fleet: Arc<Fleet>,
        limiters: Arc<Limiters>,
        metrics: FallbackMetrics,
    ) -> Result<Settler, String> {
        // The client's error could quote the URL, password included: say only what failed.
        let client = redis::Client::open(url.expose())
            .map_err(|_| "edge.redis_url is not usable by the Redis client".to_string())?;
        metrics.active.set(1);
        Ok(Settler {
            client,
            fleet,
            limiters,
            metrics,
            script: redis::Script::new(SETTLE_SCRIPT),
            connection: None,
            announced: false,
        })
    }

    /// Connect and load the script, within [`SETTLE_TIMEOUT`]; on success switch to Redis
    /// mode. The edge calls this once before serving, so it starts in a definite mode.
    pub async fn connect(&mut self) -> bool {
        let attempt = async {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(SETTLE_TIMEOUT))
                .set_response_timeout(Some(SETTLE_TIMEOUT));
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            // Loaded once per connection: a restarted Redis has lost it, and a restart always
            // breaks the connection first.
            self.script
                .prepare_invoke()
                .load_async(&mut connection)
                .await?;
            Ok::<_, SettleError>(connection)
        };
        match tokio::time::timeout(SETTLE_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                self.connection = Some(connection);
                self.enter(Mode::Redis, None);
                true
            }
            Ok(Err(e)) => {
                self.enter(Mode::Fallback, Some(&e));
                false
            }
            Err(_) => {
                self.enter(Mode::Fallback, Some(&SettleError::Timeout(SETTLE_TIMEOUT)));
                false
            }
        }
    }

    /// Switch modes, logging and counting a change once (and the first mode once).
    fn enter(&mut self, mode: Mode, why: Option<&SettleError>) {
        let before = self.fleet.mode.swap(mode as u8, Ordering::AcqRel);
        if before == mode as u8 && self.announced {
            return;
        }
        self.announced = true;
        match mode {
            Mode::Redis => {
                // Leases held before the fallback are stale: start every tenant afresh.
                self.limiters.for_each_lease(Lease::reset);
                self.metrics.active.set(0);
                tracing::info!(
                    "rate limits settled with Redis (fleet-wide per-tenant limits in force)"
                );
            }
            Mode::Fallback => {
                self.metrics.active.set(1);
                self.metrics.entered.inc();
                tracing::warn!(
                    error = why.map(tracing::field::display),
                    fleet_size = self.fleet.fleet_size,
                    "Redis unreachable: each tenant limited to limit / fleet_size at this edge \
                     until it is back"
                );
            }
        }
    }

    /// Settle every active lease in one pipelined round trip.
    async fn settle(&mut self) -> Result<(), SettleError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let mut batch: Vec<(Arc<crate::rate_limit::TenantLimits>, Claim)> = Vec::new();
        let mut pipe = redis::pipe();
        self.limiters.for_each_tenant(|tenant: Uuid, limits| {
            let Some(lease) = limits.lease() else { return };
            let limit = limits.limit();
            if let Some(claim) = lease.claim(limit) {
                pipe.cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(1)
                    .arg(format!("tenantgate:limit:{tenant}"))
                    .arg(limit.rps)
                    .arg(limit.burst)
                    .arg(claim.want)
                    .arg(claim.charge);
                batch.push((limits.clone(), claim));
            }
        });
        if batch.is_empty() {
            return Ok(());
        }
        let answers: Vec<(i64, i64)> =
            match tokio::time::timeout(SETTLE_TIMEOUT, pipe.query_async(connection)).await {
                Ok(answers) => answers?,
                Err(_) => return Err(SettleError::Timeout(SETTLE_TIMEOUT)),
            };
        let now = Instant::now();
        for ((limits, claim), (granted, _left)) in batch.iter().zip(answers) {
            if let Some(lease) = limits.lease() {
                lease.granted(claim, granted, now);
            }
        }
        Ok(())
    }

    /// Settle every [`SETTLE_INTERVAL`] until `stop`, reconnecting every
    /// [`RECONNECT_INTERVAL`] while Redis is unreachable.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SETTLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_attempt: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.connection.is_none() {
                if last_attempt.is_some_and(|at| at.elapsed() < RECONNECT_INTERVAL) {
                    continue;
                }
                last_attempt = Some(Instant::now());
                if !self.connect().await {
                    continue;
                }
            }
            if let Err(e) = self.settle().await {
                self.connection = None;
                last_attempt = Some(Instant::now());
                self.enter(Mode::Fallback, Some(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { rps: 30, burst: 9 };

    fn lease(mode: Mode) -> (Arc<Fleet>, Lease) {
        let fleet = Fleet::new(3);
        fleet.mode.store(mode as u8, Ordering::Release);
        let lease = Lease::new(&fleet, LIMIT);
        (fleet, lease)
    }

    #[test]
    fn fallback_allows_the_fleet_share() {
        let (fleet, lease) = lease(Mode::Fallback);
        assert_eq!(fleet.share(LIMIT), RateLimit { rps: 10, burst: 3 });
        let now = Instant::now();
        let allowed = (0..20).filter(|_| lease.check(LIMIT, now).allowed).count();
        assert_eq!(allowed, 3);
        assert!(
            lease.claim(LIMIT).is_none(),
            "nothing counted while falling back"
        );
    }

    #[test]
    fn without_a_lease_the_share_admits_and_is_charged() {
        let (_, lease) = lease(Mode::Redis);
        let now = Instant::now();
        let allowed = (0..5).filter(|_| lease.check(LIMIT, now).allowed).count();
        assert_eq!(allowed, 3);
        let claim = lease.claim(LIMIT).unwrap();
        assert_eq!(claim.charge, 3);
        // Demand 5, nothing held: two intervals' worth, capped at the burst.
        assert_eq!(claim.want, 9);
        assert!(claim.renew);
    }

    #[test]
    fn an_active_tenant_keeps_at_least_its_share_of_the_burst() {
        let (_, lease) = lease(Mode::Redis);
        let now = Instant::now();
        assert!(lease.check(LIMIT, now).allowed);
        // Demand 1: two intervals' worth is 2, the share of the burst (9 / 3) is 3.
        let claim = lease.claim(LIMIT).unwrap();
        assert_eq!((claim.want, claim.charge), (3, 1));
        lease.granted(&claim, 3, now);
        assert!(lease.check(LIMIT, now).allowed);
        // Holding 2 of the 3 it keeps: asks for 1 more, hands nothing back.
        let claim = lease.claim(LIMIT).unwrap();
        assert_eq!((claim.want, claim.charge), (1, 0));
    }

    #[test]
    fn a_live_lease_spends_exactly_its_tokens_and_hands_back_the_idle_ones() {
        let (_, lease) = lease(Mode::Redis);
        let now = Instant::now();
        lease.granted(
            &Claim {
                want: 4,
                charge: 0,
                renew: true,
            },
            4,
            now,
        );
        let decisions: Vec<Decision> = (0..6).map(|_| lease.check(LIMIT, now)).collect();
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 4);
        assert_eq!(decisions[0].remaining, 3);
        assert_eq!(decisions[5].retry_after_secs, 1);
        let claim = lease.claim(LIMIT).unwrap();
        assert_eq!(
            (claim.want, claim.charge),
            (9, 0),
            "demand 6: keep 12, capped at burst"
        );

        // Tokens granted, then a quiet interval: all of them go back.
        lease.granted(&claim, 5, now);
        let quiet = lease.claim(LIMIT).unwrap();
        assert_eq!((quiet.want, quiet.charge, quiet.renew), (0, -5, false));
        assert!(lease.claim(LIMIT).is_none(), "nothing left to settle");

        // The lease lapses after a few intervals without renewal: back to the local share.
        let later = now + SETTLE_INTERVAL * (LEASE_INTERVALS + 1);
        assert!(lease.check(LIMIT, later).allowed);
        assert_eq!(lease.claim(LIMIT).unwrap().charge, 1);
    }
}
