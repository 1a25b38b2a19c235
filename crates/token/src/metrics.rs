//! Prometheus metrics of the token service, served at `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What a recorded revocation covers: the `kind` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RevocationKind {
    /// Every token of a user (`sub`).
    Subject,
    /// One access token (`jti`).
    Token,
    /// A refresh token's family (`refresh_family`).
    RefreshFamily,
}

impl RevocationKind {
    pub fn label(self) -> &'static str {
        match self {
            RevocationKind::Subject => "sub",
            RevocationKind::Token => "jti",
            RevocationKind::RefreshFamily => "refresh_family",
        }
    }
}

/// An admin API action: the `action` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AdminAction {
    Disable,
    Enable,
    RevokeUser,
    RevokeToken,
}

impl AdminAction {
    pub fn label(self) -> &'static str {
        match self {
            AdminAction::Disable => "disable",
            AdminAction::Enable => "enable",
            AdminAction::RevokeUser => "revoke_user",
            AdminAction::RevokeToken => "revoke_token",
        }
    }
}

impl EncodeLabelValue for RevocationKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.label())
    }
}

impl EncodeLabelValue for AdminAction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevocationLabels {
    pub kind: RevocationKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabels {
    pub action: AdminAction,
}

pub struct Metrics {
    registry: Registry,
    pub logins_ok: Counter,
    pub logins_failed: Counter,
    pub logins_rate_limited: Counter,
    pub logins_busy: Counter,
    pub refreshes_ok: Counter,
    pub refreshes_failed: Counter,
    pub refresh_reuse_detected: Counter,
    pub hash_seconds: Histogram,
    pub revocations_recorded: Family<RevocationLabels, Counter>,
    pub admin_actions: Family<AdminLabels, Counter>,
    pub admin_requests_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gatehouse_token");
        let m = Metrics {
            logins_ok: Counter::default(),
            logins_failed: Counter::default(),
            logins_rate_limited: Counter::default(),
            logins_busy: Counter::default(),
            refreshes_ok: Counter::default(),
            refreshes_failed: Counter::default(),
            refresh_reuse_detected: Counter::default(),
            hash_seconds: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            revocations_recorded: Family::default(),
            admin_actions: Family::default(),
            admin_requests_refused: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("logins_ok", "Successful password logins", m.logins_ok.clone());
        registry.register("logins_failed", "Failed password logins", m.logins_failed.clone());
        registry.register(
            "logins_rate_limited",
            "Logins refused by the failure limit",
            m.logins_rate_limited.clone(),
        );
        registry.register(
            "logins_busy",
            "Logins refused because too many hashes were queued",
            m.logins_busy.clone(),
        );
        registry.register(
            "refreshes_ok",
            "Refresh grants that rotated a token",
            m.refreshes_ok.clone(),
        );
        registry.register(
            "refreshes_failed",
            "Refresh grants refused",
            m.refreshes_failed.clone(),
        );
        registry.register(
            "refresh_reuse_detected",
            "Spent refresh tokens presented again",
            m.refresh_reuse_detected.clone(),
        );
        registry.register(
            "hash_seconds",
            "Time of one Argon2 verification",
            m.hash_seconds.clone(),
        );
        registry.register(
            "revocations_recorded",
            "Revocations recorded over HTTP, by kind",
            m.revocations_recorded.clone(),
        );
        registry.register(
            "admin_actions",
            "Admin API actions carried out, by action",
            m.admin_actions.clone(),
        );
        registry.register(
            "admin_requests_refused",
            "Admin API requests refused: no, invalid, revoked or non-admin token",
            m.admin_requests_refused.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn revoked(&self, kind: RevocationKind) {
        self.revocations_recorded
            .get_or_create(&RevocationLabels { kind })
            .inc();
    }

    pub fn admin_action(&self, action: AdminAction) {
        self.admin_actions.get_or_create(&AdminLabels { action }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
