//! The delivery loop. Per channel: claim as many due messages as there are free send slots
//! (one statement: lease, address, unsubscribe token), send each in its own task under the
//! channel's rate limit, and hand the outcome to an acknowledger that acks in batches per
//! lease, fails transient errors with the provider's `Retry-After`, and cancels (and
//! suppresses) permanent ones. A message is acked only after its provider accepted it.
//! LISTEN wakes a channel as soon as a message is due; a poll catches delays that end.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_postgres::{AsyncMessage, Client};
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::channels::Sender;
use crate::config::{Config, Limits, UnsubscribeScope};
use crate::db::{self, ClaimOptions};
use crate::message::{Failure, Message, SendError};
use crate::metrics::Metrics;

/// How long a busy channel waits for half its send slots to free before it claims.
const CLAIM_LINGER: Duration = Duration::from_millis(20);

/// What the HTTP endpoints share with the loop.
pub struct Shared {
    pub metrics: Metrics,
    pub client: RwLock<Option<Arc<Client>>>,
    pub connected: AtomicBool,
    /// Unix milliseconds of the last claim that answered (any channel).
    pub last_claim_ms: AtomicU64,
    pub poll: Duration,
}

impl Shared {
    pub fn healthy(&self) -> bool {
        let idle = now_ms().saturating_sub(self.last_claim_ms.load(Ordering::Relaxed));
        self.connected.load(Ordering::Relaxed)
            && idle < (self.poll.as_millis() as u64 * 3).max(60_000)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct ChannelRuntime {
    pub name: &'static str,
    pub limits: Limits,
    pub sender: Sender,
    pub limiter: Option<DefaultDirectRateLimiter>,
}

impl ChannelRuntime {
    pub fn new(name: &'static str, limits: Limits, sender: Sender) -> ChannelRuntime {
        let limiter = limits
            .rate_per_second
            .and_then(NonZeroU32::new)
            .map(|r| RateLimiter::direct(Quota::per_second(r)));
        ChannelRuntime {
            name,
            limits,
            sender,
            limiter,
        }
    }
}

enum Outcome {
    Sent,
    Failed(SendError),
    /// Not sent because the worker is stopping: back to the outbox at once.
    Released,
}

/// Runs until shutdown (or, with `drain`, until nothing is due), reconnecting after a lost
/// connection. Errors out only when the start-up checks fail.
pub async fn run(
    config: Arc<Config>,
    channels: Arc<Vec<ChannelRuntime>>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: bool,
) -> Result<()> {
    let tls = db::tls(&config)?;
    let mut backoff = Duration::from_secs(1);
    loop {
        match session(&config, &tls, &channels, &shared, shutdown.clone(), drain).await {
            Ok(()) => return Ok(()),
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Lost(e)) => {
                // A session that ran starts the backoff over; failed connects double it.
                if shared.connected.swap(false, Ordering::Relaxed) {
                    backoff = Duration::from_secs(1);
                }
                *shared.client.write().unwrap() = None;
                if drain {
                    return Err(e);
                }
                error!(error = %format!("{e:#}"), retry_in_s = backoff.as_secs(), "database connection lost; reconnecting");
                let mut stop = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

enum SessionError {
    /// The configuration or the database cannot work: stop.
    Fatal(anyhow::Error),
    /// The connection went away: reconnect.
    Lost(anyhow::Error),
}

async fn session(
    config: &Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    channels: &Arc<Vec<ChannelRuntime>>,
    shared: &Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    drain: bool,
) -> Result<(), SessionError> {
    let url = config.database_url().map_err(SessionError::Fatal)?;
    let (client, mut connection) = tokio_postgres::connect(&url, tls.clone())
        .await
        .map_err(|e| SessionError::Lost(anyhow::anyhow!("cannot connect: {}", db::db_error(&e))))?;
    let wake: Arc<HashMap<&'static str, Arc<Notify>>> = Arc::new(
        channels
            .iter()
            .map(|c| (c.name, Arc::new(Notify::new())))
            .collect(),
    );
    {
        let wake = wake.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if let Some(w) = wake.get(n.payload()) {
                            w.notify_one();
                        }
                    }
                    Ok(AsyncMessage::Notice(n)) => info!(notice = %n.message(), "database notice"),
                    Ok(_) => {}
                    Err(e) => {
                        error!(error = %e, "database connection failed");
                        break;
                    }
                }
            }
            // Wake every channel: its next claim finds the connection closed and stops.
            for w in wake.values() {
                w.notify_one();
            }
        });
    }
    let client = Arc::new(client);
    client
        .batch_execute("LISTEN personalize_outbox")
        .await
        .map_err(|e| SessionError::Lost(e.into()))?;
    let names: Vec<&str> = channels.iter().map(|c| c.name).collect();
    let has_recipients = db::check(&client, &names, config.http.unsubscribe_url.is_some())
        .await
        .map_err(|e| {
            if client.is_closed() {
                SessionError::Lost(e)
            } else {
                SessionError::Fatal(e)
            }
        })?;
    *shared.client.write().unwrap() = Some(client.clone());
    shared.connected.store(true, Ordering::Relaxed);
    shared.last_claim_ms.store(now_ms(), Ordering::Relaxed);
    info!(channels = ?names, "delivering");

    let mut loops = JoinSet::new();
    for (i, has) in has_recipients.into_iter().enumerate() {
        let options = ClaimOptions {
            batch: config.worker.batch,
            visibility: Duration::from_secs(config.worker.visibility_seconds),
            with_address: has,
            with_token: config.http.unsubscribe_url.is_some(),
            token_per_campaign: config.worker.unsubscribe_scope == UnsubscribeScope::Campaign,
        };
        let ctx = LoopContext {
            channels: channels.clone(),
            index: i,
            client: client.clone(),
            shared: shared.clone(),
            options,
            unsubscribe_url: config.http.unsubscribe_url.clone(),
            wake: wake[channels[i].name].clone(),
            shutdown: shutdown.clone(),
            poll: Duration::from_secs_f64(config.worker.poll_seconds),
            grace: Duration::from_secs(config.worker.shutdown_grace_seconds),
            drain,
            paused_until_ms: Arc::new(AtomicU64::new(0)),
            pause: Duration::from_secs(config.worker.pause_seconds),
        };
        loops.spawn(channel_loop(ctx));
    }
    let mut lost = None;
    while let Some(r) = loops.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => lost = Some(e),
            Err(e) => lost = Some(anyhow::anyhow!("channel loop panicked: {e}")),
        }
    }
    match lost {
        Some(e) => Err(SessionError::Lost(e)),
        None => Ok(()),
    }
}

struct LoopContext {
    channels: Arc<Vec<ChannelRuntime>>,
    index: usize,
    client: Arc<Client>,
    shared: Arc<Shared>,
    options: ClaimOptions,
    unsubscribe_url: Option<String>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    poll: Duration,
    grace: Duration,
    drain: bool,
    /// Unix milliseconds until which the channel claims nothing (set by the acknowledger on a
    /// configuration failure).
    paused_until_ms: Arc<AtomicU64>,
    pause: Duration,
}

async fn channel_loop(mut ctx: LoopContext) -> Result<()> {
    let ch = ctx.channels[ctx.index].name;
    let limits = ctx.channels[ctx.index].limits;
    let metrics_in_flight = ctx.shared.metrics.in_flight.with_label_values(&[ch]);
    let slots = Arc::new(Semaphore::new(limits.concurrency));
    // Messages claimed and not yet finished, to hand back what a stop leaves unsent.
    let held: Arc<Mutex<HashMap<i64, Message>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(Message, Outcome)>();
    let acker = tokio::spawn(acknowledger(
        ctx.client.clone(),
        done_rx,
        ctx.shared.clone(),
        ch,
        ctx.paused_until_ms.clone(),
        ctx.pause,
    ));
    let mut sends: JoinSet<()> = JoinSet::new();
    let mut result = Ok(());
    let mut drained_once = false;
    let mut claim_errors = 0;

    loop {
        if *ctx.shutdown.borrow() {
            break;
        }
        while sends.try_join_next().is_some() {}
        // A channel whose credentials or endpoint are refused waits before claiming more.
        let paused_ms = ctx
            .paused_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms());
        if paused_ms > 0 {
            warn!(
                channel = ch,
                seconds = paused_ms / 1000,
                "paused: the provider refuses our configuration"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(paused_ms)) => {}
                _ = ctx.shutdown.changed() => break,
            }
            continue;
        }
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = ctx.shutdown.changed() => break,
        };
        // Busy: a claim has a fixed cost in the database (its checks run per batch), so
        // rather than claim one message per freed slot, wait a moment for half the slots.
        let half = (limits.concurrency / 2).max(1);
        if 1 + slots.available_permits() < half {
            if let Ok(Ok(more)) =
                tokio::time::timeout(CLAIM_LINGER, slots.acquire_many(half as u32 - 1)).await
            {
                drop(more);
            }
        }
        let want = (1 + slots.available_permits()) as u32;
        let claimed = match db::claim(
            &ctx.client,
            ch,
            want,
            &ctx.options,
            ctx.unsubscribe_url.as_deref(),
        )
        .await
        {
            Ok(m) => {
                claim_errors = 0;
                m
            }
            Err(e) => {
                drop(first);
                if ctx.client.is_closed() {
                    result = Err(e);
                    break;
                }
                // A claim that fails (a recipients view the role cannot read) claims nothing.
                error!(channel = ch, error = %format!("{e:#}"), "claim failed; retrying");
                claim_errors += 1;
                if ctx.drain && claim_errors >= 3 {
                    result = Err(e);
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = ctx.shutdown.changed() => break,
                }
                continue;
            }
        };
        ctx.shared.last_claim_ms.store(now_ms(), Ordering::Relaxed);
        let got = claimed.len();
        ctx.shared
            .metrics
            .claimed
            .with_label_values(&[ch])
            .inc_by(got as u64);
        let mut first = Some(first);
        for m in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => slots
                    .clone()
                    .try_acquire_owned()
                    .expect("claimed at most the free slots"),
            };
            held.lock().unwrap().insert(m.message_id, m.clone());
            metrics_in_flight.inc();
            let channels = ctx.channels.clone();
            let index = ctx.index;
            let done = done_tx.clone();
            let held = held.clone();
            let shared = ctx.shared.clone();
            let mut stop = ctx.shutdown.clone();
            let gauge = metrics_in_flight.clone();
            sends.spawn(async move {
                let rt = &channels[index];
                let outcome = async {
                    if let Some(limiter) = &rt.limiter {
                        tokio::select! {
                            _ = limiter.until_ready() => {}
                            _ = stop.wait_for(|s| *s) => return Outcome::Released,
                        }
                    }
                    let started = Instant::now();
                    // The whole send, whatever the client library bounds itself (lettre's
                    // timeout covers only the connect), within the channel's timeout.
                    let r = match tokio::time::timeout(rt.limits.timeout, rt.sender.send(&m)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(SendError::transient(
                            "timeout",
                            format!("{}: no answer within {:?}", rt.name, rt.limits.timeout),
                            None,
                        )),
                    };
                    shared
                        .metrics
                        .send_seconds
                        .with_label_values(&[rt.name])
                        .observe(started.elapsed().as_secs_f64());
                    match r {
                        Ok(()) => Outcome::Sent,
                        Err(e) => Outcome::Failed(e),
                    }
                }
                .await;
                held.lock().unwrap().remove(&m.message_id);
                gauge.dec();
                let _ = done.send((m, outcome));
                drop(permit);
            });
        }
        if got > 0 {
            // More may be due (a short claim may only mean some were cancelled or deferred).
            drained_once = false;
            continue;
        }
        if ctx.drain {
            // Finish what is in flight (its failures may be due again at once), then stop
            // when a second claim finds nothing.
            while sends.join_next().await.is_some() {}
            if drained_once {
                break;
            }
            drained_once = true;
            continue;
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(ctx.poll) => {}
            _ = ctx.shutdown.changed() => {}
        }
    }

    // Stopping: sends in flight get the grace period; whatever is still held after it is
    // handed back (failed with no delay), so another worker takes it at once.
    if !sends.is_empty() {
        info!(
            channel = ch,
            in_flight = sends.len(),
            "finishing sends in flight"
        );
        let finished = tokio::time::timeout(ctx.grace, async {
            while sends.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            sends.abort_all();
            while sends.join_next().await.is_some() {}
        }
    }
    let left: Vec<Message> = held.lock().unwrap().drain().map(|(_, m)| m).collect();
    for m in left {
        warn!(
            channel = ch,
            message_id = m.message_id,
            "send did not finish within the grace period; handed back"
        );
        metrics_in_flight.dec();
        let _ = done_tx.send((m, Outcome::Released));
    }
    drop(done_tx);
    let _ = acker.await;
    info!(channel = ch, "stopped");
    result
}

/// Records outcomes: acks in batches per lease, one statement per failure.
async fn acknowledger(
    client: Arc<Client>,
    mut rx: mpsc::UnboundedReceiver<(Message, Outcome)>,
    shared: Arc<Shared>,
    ch: &'static str,
    paused_until_ms: Arc<AtomicU64>,
    pause: Duration,
) {
    let m = &shared.metrics;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(_) => break,
            }
        }
        let mut acks: HashMap<Uuid, Vec<i64>> = HashMap::new();
        for (msg, outcome) in batch.drain(..) {
            match outcome {
                Outcome::Sent => acks
                    .entry(msg.lease_token)
                    .or_default()
                    .push(msg.message_id),
                Outcome::Released => {
                    if let Err(e) = db::release(&client, &msg, Duration::ZERO).await {
                        warn!(channel = ch, message_id = msg.message_id, error = %format!("{e:#}"),
                              "cannot hand back; it returns when its lease ends");
                    }
                }
                Outcome::Failed(e) => {
                    if let Failure::Configuration {
                        pause_channel: true,
                    } = e.failure
                    {
                        let until = now_ms() + pause.as_millis() as u64;
                        paused_until_ms.fetch_max(until, Ordering::Relaxed);
                    }
                    record_failure(&client, &msg, &e, &shared, ch, pause).await
                }
            }
        }
        for (lease, ids) in acks {
            match db::ack_batch(&client, lease, &ids).await {
                Ok(n) => {
                    m.sent.with_label_values(&[ch]).inc_by(n as u64);
                    if (n as usize) < ids.len() {
                        let lost = ids.len() - n as usize;
                        m.acks_lost.with_label_values(&[ch]).inc_by(lost as u64);
                        warn!(channel = ch, lost, "delivered after the lease ended: another worker may deliver these again");
                    }
                }
                Err(e) => {
                    m.acks_lost
                        .with_label_values(&[ch])
                        .inc_by(ids.len() as u64);
                    error!(channel = ch, messages = ids.len(), error = %format!("{e:#}"), "ack failed: delivered messages will be redelivered");
                }
            }
        }
    }
}

async fn record_failure(
    client: &Client,
    msg: &Message,
    e: &SendError,
    shared: &Shared,
    ch: &'static str,
    pause: Duration,
) {
    // Providers quote the address back; neither the logs nor last_error keep it.
    let reason = crate::message::redact(&e.reason, msg.address.as_deref());
    let result: Result<&'static str> = async {
        match &e.failure {
            Failure::Transient { retry_after } => {
                let state = db::fail(client, msg, &reason, *retry_after).await?;
                Ok(match state.as_deref() {
                    Some("dead") => "dead",
                    Some(_) => "retry",
                    None => "lease_lost",
                })
            }
            Failure::Permanent { suppress } => {
                if *suppress {
                    db::suppress(client, msg, &reason)
                        .await
                        .context("suppress")?;
                }
                Ok(if db::cancel(client, msg, &reason).await? {
                    "cancelled"
                } else {
                    "lease_lost"
                })
            }
            Failure::Configuration { .. } => Ok(if db::release(client, msg, pause).await? {
                "released"
            } else {
                "lease_lost"
            }),
        }
    }
    .await;
    match result {
        Ok(outcome) => {
            shared
                .metrics
                .failed
                .with_label_values(&[ch, outcome, e.label])
                .inc();
            warn!(channel = ch, message_id = msg.message_id, campaign = %msg.campaign, attempt = msg.attempt,
                  outcome, reason = e.label, error = %reason, "send failed");
        }
        Err(err) => {
            error!(channel = ch, message_id = msg.message_id, error = %format!("{err:#}"), "cannot record a failed send; it returns when its lease ends")
        }
    }
}

/// Builds every configured channel's sender (fails at start on a missing secret or key).
pub fn channel_runtimes(
    config: &Config,
    renderer: Arc<crate::render::Renderer>,
) -> Result<Vec<ChannelRuntime>> {
    config
        .channels()
        .into_iter()
        .map(|(name, limits)| {
            Ok(ChannelRuntime::new(
                name,
                limits,
                Sender::build(name, config, limits, renderer.clone())?,
            ))
        })
        .collect()
}
