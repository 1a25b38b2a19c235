//! One Envoy counter per [`Outcome`], defined once per VM.

use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;

use crate::decision::Outcome;

pub struct Metrics {
    ids: Vec<u32>,
}

impl Metrics {
    /// Defines every counter; `None` if the host refuses one.
    pub fn define() -> Option<Metrics> {
        let ids = Outcome::ALL
            .iter()
            .map(|o| define_metric(MetricType::Counter, o.metric_name()).ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Metrics { ids })
    }

    pub fn count(&self, outcome: Outcome) {
        if let Some(&id) = self.ids.get(outcome.index()) {
            // A stats failure must not change the decision.
            let _ = increment_metric(id, 1);
        }
    }
}
