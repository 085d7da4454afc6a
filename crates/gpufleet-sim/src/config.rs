//! [`MockConfig`]: what a simulated llama.cpp server looks like and how it misbehaves.

use std::time::Duration;

/// Settings of one simulated model server. `Default` is a fast, healthy 4-slot server.
#[derive(Clone, Debug, PartialEq)]
pub struct MockConfig {
    /// Model name reported by `/v1/models` and echoed in answers.
    pub model: String,
    /// Parallel generation slots (llama.cpp `--parallel`). At least 1 is used.
    pub slots: usize,
    /// Time to first token, in milliseconds.
    pub latency_ms: u64,
    /// Generation speed; 0 means no pacing (all tokens at once).
    pub tokens_per_s: f64,
    /// Tokens generated when the request does not ask for fewer (`max_tokens` / `n_predict`).
    pub max_tokens: u32,
    /// Probability (0..=1) that a request is answered with a 500.
    pub fail_rate: f64,
    /// Probability (0..=1) that a request never gets an answer (it holds its slot until the client
    /// goes away).
    pub hang_rate: f64,
    /// Delay before the response headers are sent, in milliseconds.
    pub slow_first_byte_ms: u64,
    /// For this long after start, `/health` and generation routes answer 503 "Loading model".
    pub loading_for_ms: u64,
    /// When all slots are busy: wait for one (true, like llama.cpp) or answer 503 (false).
    pub queue_when_full: bool,
    /// After this many requests the server asks to be crashed ([`crate::MockHandle::crash_requested`]);
    /// only the binary acts on it (by exiting).
    pub crash_after: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            model: "mock-model".to_owned(),
            slots: 4,
            latency_ms: 0,
            tokens_per_s: 0.0,
            max_tokens: 16,
            fail_rate: 0.0,
            hang_rate: 0.0,
            slow_first_byte_ms: 0,
            loading_for_ms: 0,
            queue_when_full: true,
            crash_after: None,
        }
    }
}

impl MockConfig {
    /// A healthy server for `model` with default settings.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Time between two generated tokens (zero when unpaced).
    pub(crate) fn token_interval(&self) -> Duration {
        if self.tokens_per_s > 0.0 && self.tokens_per_s.is_finite() {
            Duration::from_secs_f64(1.0 / self.tokens_per_s)
        } else {
            Duration::ZERO
        }
    }
}
