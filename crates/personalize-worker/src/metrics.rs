//! Prometheus metrics, served at `/metrics`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub claimed: IntCounterVec,
    pub sent: IntCounterVec,
    pub failed: IntCounterVec,
    pub acks_lost: IntCounterVec,
    pub send_seconds: HistogramVec,
    pub in_flight: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("personalize_worker".into()), None).expect("registry");
        let claimed = IntCounterVec::new(
            Opts::new("messages_claimed_total", "Messages claimed from the outbox"),
            &["channel"],
        )
        .unwrap();
        let sent = IntCounterVec::new(
            Opts::new(
                "messages_sent_total",
                "Messages the provider accepted and that were acked",
            ),
            &["channel"],
        )
        .unwrap();
        let failed = IntCounterVec::new(
            Opts::new(
                "messages_failed_total",
                "Sends that failed, by outcome (retry, cancelled) and reason",
            ),
            &["channel", "outcome", "reason"],
        )
        .unwrap();
        let acks_lost = IntCounterVec::new(
            Opts::new(
                "acks_lost_total",
                "Delivered messages whose ack found the lease gone (they will be redelivered)",
            ),
            &["channel"],
        )
        .unwrap();
        let send_seconds = HistogramVec::new(
            HistogramOpts::new(
                "send_seconds",
                "Time a provider took to accept or refuse a message",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["channel"],
        )
        .unwrap();
        let in_flight = IntGaugeVec::new(
            Opts::new("in_flight", "Messages claimed and not yet finished"),
            &["channel"],
        )
        .unwrap();
        for c in [
            Box::new(claimed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(sent.clone()),
            Box::new(failed.clone()),
            Box::new(acks_lost.clone()),
            Box::new(send_seconds.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            claimed,
            sent,
            failed,
            acks_lost,
            send_seconds,
            in_flight,
        }
    }

    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
