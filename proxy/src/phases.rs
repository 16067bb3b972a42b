//! The `ProxyHttp` implementation: a short list of phase hooks, each delegating to the module
//! named after what it does (`headers`, `resolve`, `rate_limit`, `pools`, `metrics`); the
//! status gate is the tenant contract's `TenantStatus::admission`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use tenantgate_config::Config;
use tenantgate_contract::host::normalize_host;
use tenantgate_contract::signing::TenantClaims;
use tenantgate_contract::{Admission, Refusal};

use crate::acme::Challenges;
use crate::error::Reject;
use crate::headers::{self, Forwarded};
use crate::metrics::{EdgeMetrics, UpstreamError, NONE_LABEL};
use crate::pools::{Backend, Pools};
use crate::rate_limit::{Decision, InFlight};
use crate::resolve::{Resolver, RouteInfo};

/// Longest wait for any read from a backend (a hung backend must not hold requests forever).
const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Pooled backend connections idle longer than this are closed.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The edge's proxy logic, shared by all requests.
pub struct Edge {
    pub(crate) config: Arc<Config>,
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) pools: Arc<Pools>,
    pub(crate) metrics: Arc<EdgeMetrics>,
    /// Each client address's share of its tenant's limit.
    pub(crate) clients: Arc<crate::rate_limit::ClientLimiters>,
    /// Pending ACME HTTP-01 challenges, answered on the plain listener.
    pub(crate) challenges: Arc<Challenges>,
    /// Set when a stop or an upgrade was requested: responses then close their connection, so
    /// keep-alive clients reconnect (to the new process, during an upgrade) instead of sending
    /// their next request on a connection that is about to go away.
    pub(crate) draining: Arc<AtomicBool>,
}

/// What one request carries between phases.
pub struct RequestCtx {
    started: Instant,
    /// Wall-clock time of admission (Unix ms): the request id's and the signature's time, read
    /// once per request (again after a hold).
    unix_ms: i64,
    route: Option<Arc<RouteInfo>>,
    prefixed: bool,
    backend: Option<Arc<Backend>>,
    tried: Vec<Arc<Backend>>,
    retried: bool,
    request_id: String,
    reject: Option<Reject>,
    /// Held while the request counts against its tenant's in-flight cap.
    in_flight: Option<InFlight>,
    /// When the whole request body must have arrived (`edge.body_timeout_ms` after admission).
    body_deadline: Option<Instant>,
    /// The client connection is TLS.
    tls: bool,
    /// Where a plain-HTTP request of an `https_only` tenant is redirected.
    redirect: Option<http::HeaderValue>,
}

impl RequestCtx {
    /// Read the wall clock for this request and give it its request id.
    fn stamp(&mut self) {
        self.unix_ms = tenantgate_contract::time::now_ms();
        self.request_id = headers::new_request_id(self.unix_ms);
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            unix_ms: 0,
            route: None,
            prefixed: false,
            backend: None,
            tried: Vec::new(),
            retried: false,
            request_id: String::new(),
            reject: None,
            in_flight: None,
            body_deadline: None,
            tls: false,
            redirect: None,
        }
    }

    /// Runs once the request headers are read: check the request, resolve its tenant, redirect
    /// plain HTTP of `https_only` tenants, apply the status gate and the rate limits, and choose
    /// a backend; allow the next pipelined request and start the body deadline. `Ok(true)` means
    /// the edge answered itself; `Ok(false)` continues to the upstream.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        // Answer pipelined requests (several in one write) one after another, in order: by
        // default Pingora answers the first, closes, and drops the rest silently. Set on every
        // request because it is per session; Pingora carries it across keep-alive reuse.
        session.set_pipelining_enabled(true);
        if let Some(answer) = self.challenge_answer(session, ctx) {
            answer_challenge(session, ctx, answer).await?;
            return Ok(true);
        }
        match self.admit(session, ctx).await {
            Ok(()) => match ctx.redirect.take() {
                Some(location) => {
                    redirect(session, ctx, location).await?;
                    Ok(true)
                }
                None => {
                    // The body deadline: a total one, checked as parts arrive, and the same as
                    // the longest wait for one read, for a client that stops sending altogether.
                    let limit = self.config.edge.body_timeout;
                    ctx.body_deadline = Some(Instant::now() + limit);
                    session.set_read_timeout(Some(limit));
                    Ok(false)
                }
            },
            Err((reject, limit)) => {
                respond(
                    session,
                    ctx,
                    reject,
                    limit.as_ref(),
                    reject.closes_connection(),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Runs before each connection attempt: the backend chosen in `request_filter`, or on a
    /// retry another healthy backend of the shard.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let backend = match ctx.backend.take() {
            Some(b) => b,
            None => {
                let pool = ctx.route.as_ref().and_then(|r| self.pools.get(&r.shard));
                match pool.and_then(|p| p.pick(&ctx.tried)) {
                    Some(b) => b,
                    None => {
                        ctx.reject = Some(Reject::ShardUnavailable);
                        return Err(Error::explain(
                            ErrorType::ConnectNoRoute,
                            "no healthy backend",
                        ));
                    }
                }
            }
        };
        let Some(addr) = backend.addr else {
            ctx.reject = Some(Reject::ShardUnavailable);
            return Err(Error::explain(
                ErrorType::ConnectNoRoute,
                "backend does not resolve",
            ));
        };
        ctx.tried.push(backend);
        let mut peer = HttpPeer::new(addr, false, String::new());
        // A backend that does not accept within it is ejected (`fail_to_connect`).
        peer.options.connection_timeout = Some(self.config.edge.connect_timeout);
        peer.options.read_timeout = Some(UPSTREAM_READ_TIMEOUT);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    /// Runs when connecting to a backend failed: eject it and retry once on another backend
    /// (nothing was sent, so this is safe for any method).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(backend), Some(route)) = (ctx.tried.last(), &ctx.route) {
            backend.eject();
            self.metrics
                .upstream_healthy
                .with_label_values(&[&*route.shard, backend.name.as_str()])
                .set(0);
            self.metrics
                .upstream_error(&route.shard, UpstreamError::Connect);
            tracing::warn!(shard = %route.shard, backend = %backend.name, error = %e, "backend connect failed; ejected");
        }
        if !ctx.retried {
            ctx.retried = true;
            e.set_retry(true);
        }
        e
    }

    /// Runs for each part of the request body as it arrives from the client: refuses the rest
    /// (408 `body_timeout`, connection closed) once the body deadline has passed, so a client
    /// trickling its body cannot hold a connection and a backend request for as long as it
    /// likes.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if !end_of_stream && ctx.body_deadline.is_some_and(|d| Instant::now() > d) {
            ctx.reject = Some(Reject::BodyTimeout);
            return Error::e_explain(ErrorType::ReadTimedout, "request body deadline passed");
        }
        Ok(())
    }

    /// Runs before the request is sent: strip inbound internal headers, set the tenant headers
    /// and the signature, strip a matched path prefix.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route at upstream phase");
        };
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        headers::rewrite_upstream(
            upstream,
            Forwarded {
                route: &route.headers,
                request_id: &ctx.request_id,
                sign: |method: &str, target: &str| {
                    self.config.security.signing.sign(
                        &TenantClaims {
                            tenant_id: route.tenant_id,
                            slug: &route.slug,
                            shard: &route.shard,
                            epoch: route.epoch,
                            request_id: &ctx.request_id,
                            method,
                            target,
                        },
                        ctx.unix_ms / 1000,
                    )
                },
                client_ip,
                prefix: if ctx.prefixed {
                    route.path_prefix.as_deref()
                } else {
                    None
                },
                tls: ctx.tls,
            },
        )
    }

    /// Runs before the response goes to the client: echo the request id for support cases, and
    /// close the connection after it while draining.
    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let draining = self.draining.load(Ordering::Relaxed);
        if draining {
            session.set_keepalive(None);
        }
        let hsts = match (&ctx.route, ctx.tls) {
            (Some(route), true) => route.hsts.as_ref(),
            _ => None,
        };
        headers::annotate_response(response, &ctx.request_id, hsts, draining)
    }

    /// Runs when proxying failed: answer with the JSON error of the reason (none when the
    /// client is gone).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let gone = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        let reject = match ctx.reject.or_else(|| self.classify(e, ctx)) {
            Some(r) => r,
            None => return gone,
        };
        // Pingora does not reuse the connection after a proxy failure: say so.
        if respond(session, ctx, reject, None, true).await.is_err() {
            return gone;
        }
        FailToProxy {
            error_code: reject.status(),
            can_reuse_downstream: false,
        }
    }

    /// Runs after `fail_to_proxy`; `true` stops Pingora's own line, which is always at error
    /// level. The edge logs failures itself, at the level of whose fault they are: requests it
    /// refused on purpose (no healthy backend, ...) are in the access log and the metrics
    /// already; a client's mistake or disconnect is debug; a backend or internal failure is a
    /// warning.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        if ctx.reject.is_none() {
            if *error.esource() == ErrorSource::Downstream {
                tracing::debug!(request_id = %ctx.request_id, %error, "client failed the request");
            } else {
                tracing::warn!(request_id = %ctx.request_id, %error, "proxying failed");
            }
        }
        true
    }

    /// Runs once per request at its very end: metrics and the access log.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let (tenant, shard) = match &ctx.route {
            Some(r) => (&*r.label, &*r.shard),
            None => (NONE_LABEL, NONE_LABEL),
        };
        if let Some(route) = &ctx.route {
            route.usage.record(status, session.body_bytes_sent() as u64);
        }
        self.metrics.record(
            ctx.route
                .as_deref()
                .map(|r| (&r.series, &*r.label, &*r.shard)),
            status,
            elapsed,
        );
        if let Some(reject) = ctx.reject {
            self.metrics
                .rejections
                .with_label_values(&[reject.code()])
                .inc();
            if reject == Reject::RateLimited {
                self.metrics.rate_limited.with_label_values(&[tenant]).inc();
            }
        }
        tracing::info!(
            target: "tenantgate::access",
            tenant,
            shard,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = %ctx.request_id,
            method = %session.req_header().method,
            reason = ctx.reject.map(Reject::code),
            "request"
        );
    }
}

impl Edge {
    /// The answer to a proxying error that no phase classified: connect failures (after the
    /// retry) mean no backend could take the request, other upstream failures are a bad
    /// gateway, and a client that went away gets nothing.
    fn classify(&self, e: &Error, ctx: &RequestCtx) -> Option<Reject> {
        match e.etype() {
            ErrorType::ConnectNoRoute
            | ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectError => return Some(Reject::ShardUnavailable),
            _ => {}
        }
        match e.esource() {
            ErrorSource::Downstream => match e.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => None,
                // The per-read body timeout set at admission.
                ErrorType::ReadTimedout => Some(Reject::BodyTimeout),
                _ => Some(Reject::MalformedRequest),
            },
            _ => {
                if let Some(route) = &ctx.route {
                    self.metrics
                        .upstream_error(&route.shard, UpstreamError::Proxy);
                }
                Some(Reject::BadGateway)
            }
        }
    }

    /// The key authorization when the request is an ACME HTTP-01 challenge the edge holds,
    /// asked on the plain listener (any host: the CA asks for the domain it validates). Checks
    /// the request like any other first, so a malformed one is still refused.
    fn challenge_answer(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Arc<str>> {
        let req = session.req_header();
        let path = req.uri.path();
        if !path.starts_with(crate::acme::CHALLENGE_PREFIX)
            || session.digest().is_some_and(|d| d.ssl_digest.is_some())
            || headers::check_request(req, self.config.edge.max_header_bytes).is_err()
        {
            return None;
        }
        let answer = self.challenges.answer(path)?;
        ctx.stamp();
        Some(answer)
    }

    /// The admission steps of `request_filter`, in order. `Err` carries the answer to give.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), (Reject, Option<Decision>)> {
        // The listener the request came in on: a TLS connection has a TLS digest.
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let req = session.req_header();
        headers::check_request(req, self.config.edge.max_header_bytes).map_err(|r| (r, None))?;
        let raw_host = headers::host_of(req).map_err(|r| (r, None))?;
        let host = normalize_host(raw_host).map_err(|_| (Reject::InvalidHost, None))?;
        let entry = self.resolver.lookup(&host).await.map_err(|r| (r, None))?;
        let path = session.req_header().uri.path();
        let (route, prefixed) = entry.route_for(path).ok_or((Reject::UnknownTenant, None))?;
        let mut route = route.clone();
        ctx.prefixed = prefixed;
        ctx.stamp();
        ctx.route = Some(route.clone());
        if route.https_only && !ctx.tls && !headers::exempt_from_https_redirect(path) {
            let location = headers::https_location(&host, session.req_header())
                .map_err(|_| (Reject::MalformedRequest, None))?;
            ctx.redirect = Some(location);
            return Ok(());
        }

        // `new_ctx` ran once the request header was read: its instant is "now" for the limiter.
        let mut now = ctx.started;
        match route.status.admission() {
            Admission::Serve => {}
            Admission::Refuse(refusal) => return Err((Reject::Tenant(refusal), None)),
            Admission::Hold => {
                route = self
                    .hold_while_moving(&host, &route)
                    .await
                    .map_err(|r| (r, None))?;
                ctx.route = Some(route.clone());
                now = Instant::now();
                ctx.unix_ms = tenantgate_contract::time::now_ms();
            }
        }

        // The client's share first: requests refused there never take from the tenant's
        // limit, so one address cannot spend what the tenant's other users need.
        let share = route
            .client_share
            .unwrap_or(self.config.edge.per_client_share);
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let (Some(limit), Some(client)) = (share.of(route.limits.limit()), client) {
            let decision = self.clients.check(route.tenant_id, client, limit, now);
            if !decision.allowed {
                return Err((Reject::RateLimited, Some(decision)));
            }
        }
        let decision = route.limits.check(now);
        if !decision.allowed {
            return Err((Reject::RateLimited, Some(decision)));
        }
        if let Some(cap) = self.config.edge.max_inflight_per_tenant {
            ctx.in_flight = Some(
                route
                    .limits
                    .enter(cap)
                    .ok_or((Reject::TooManyInFlight, None))?,
            );
        }

        let pool = self
            .pools
            .get(&route.shard)
            .ok_or((Reject::ShardUnavailable, None))?;
        let backend = pool.pick(&[]).ok_or((Reject::ShardUnavailable, None))?;
        ctx.backend = Some(backend);
        Ok(())
    }

    /// Hold a request for a tenant in `moving` until its status changes or `edge.moving_hold`
    /// passes, polling the cache (the feed refreshes it). Returns the route to use.
    async fn hold_while_moving(
        &self,
        host: &str,
        route: &Arc<RouteInfo>,
    ) -> Result<Arc<RouteInfo>, Reject> {
        let deadline = Instant::now() + self.config.edge.moving_hold;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let current = self
                .resolver
                .cached(host)
                .await
                .and_then(|e| e.route_of(route.tenant_id).cloned());
            match current {
                Some(r) => match r.status.admission() {
                    Admission::Serve => return Ok(r),
                    Admission::Refuse(refusal) => return Err(Reject::Tenant(refusal)),
                    Admission::Hold => {}
                },
                None => return Err(Reject::UnknownTenant),
            }
        }
        Err(Reject::Tenant(Refusal::MovingTimedOut))
    }
}

/// Answer an ACME HTTP-01 challenge with its key authorization (RFC 8555 §8.3).
async fn answer_challenge(
    session: &mut Session,
    ctx: &mut RequestCtx,
    key_authorization: Arc<str>,
) -> pingora::Result<()> {
    let body = Bytes::copy_from_slice(key_authorization.as_bytes());
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header("content-type", "text/plain")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Answer a plain-HTTP request of an `https_only` tenant with a 308 to `location` (308 keeps
/// the method and body, unlike 301).
async fn redirect(
    session: &mut Session,
    ctx: &mut RequestCtx,
    location: http::HeaderValue,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(308, Some(4))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    session.write_response_header(Box::new(resp), true).await
}

/// Answer the request with the JSON error of `reject` (and the rate-limit headers); `close`
/// ends the connection after the answer.
async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reject: Reject,
    limit: Option<&Decision>,
    close: bool,
) -> pingora::Result<()> {
    ctx.reject = Some(reject);
    let body = Bytes::from(reject.body());
    let mut resp = ResponseHeader::build(reject.status(), Some(8))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if let Some(d) = limit {
        resp.insert_header("retry-after", d.retry_after_secs.to_string())?;
        resp.insert_header("ratelimit-limit", d.limit.to_string())?;
        resp.insert_header("ratelimit-remaining", d.remaining.to_string())?;
        resp.insert_header("ratelimit-reset", d.reset_secs.to_string())?;
    } else if let Some(secs) = reject.retry_after_secs() {
        resp.insert_header("retry-after", secs.to_string())?;
    }
    if ctx.request_id.is_empty() {
        // Refused before routing (unknown or invalid host, malformed request): the answer and
        // the access log still carry an id a support case can quote.
        ctx.stamp();
    }
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if close {
        resp.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}
