//! Per-call lock options, and their resolution against the engine's defaults.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::resource;

/// Default lock TTL (VonaJS's production value).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// Default clock drift factor, applied as `ttl * factor + 2 ms`.
pub const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Default delay between acquisition attempts.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Default jitter added to or taken from the retry delay.
pub const DEFAULT_RETRY_JITTER: Duration = Duration::from_millis(100);
/// The instance segment of the key when no instance is named (as in VonaJS).
pub const DEFAULT_INSTANCE: &str = "~";

/// The longest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Constant part of the clock drift allowance.
const DRIFT_FLOOR: Duration = Duration::from_millis(2);
/// Per-node timeouts default to this fraction of the TTL...
const NODE_TIMEOUT_DIVISOR: u32 = 20;
/// ...but never more than this: a node that slow is treated as down.
const NODE_TIMEOUT_CAP: Duration = Duration::from_secs(1);

/// What `lock` does when the lock is lost while the function runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLoss {
    /// Drop the function's future at once and return [`Error::LockLost`].
    #[default]
    Abort,
    /// Let the function run to its end; it sees the loss through
    /// [`LockContext::is_lost`](crate::LockContext::is_lost) and
    /// [`LockContext::lost`](crate::LockContext::lost), and `lock` returns its value.
    Continue,
}

/// Options of one lock call. Unset fields take the engine's defaults
/// (set on [`RedlockBuilder`](crate::RedlockBuilder)).
///
/// ```
/// use std::time::Duration;
/// use redlock_core::LockOptions;
/// let opts = LockOptions::default()
///     .ttl(Duration::from_secs(5))
///     .wait(Duration::from_secs(2))
///     .instance("tenant-7");
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct LockOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) wait: Option<Option<Duration>>,
    pub(crate) retry_delay: Option<Duration>,
    pub(crate) retry_jitter: Option<Duration>,
    pub(crate) drift_factor: Option<f64>,
    pub(crate) node_timeout: Option<Duration>,
    pub(crate) instance: Option<Arc<str>>,
    pub(crate) on_loss: Option<OnLoss>,
    pub(crate) fencing: Option<bool>,
}

impl LockOptions {
    /// How long the lock lives on the nodes without extension (default 30 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Upper bound on the whole acquisition, all retries included (default: unbounded).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(Some(wait));
        self
    }

    /// Wait for the lock as long as other holders keep it (the default, as in VonaJS).
    ///
    /// Even then a call does not hang on unreachable nodes: when no quorum has
    /// answered for a whole TTL, it returns [`Error::QuorumUnreachable`].
    pub fn wait_forever(mut self) -> Self {
        self.wait = Some(None);
        self
    }

    /// Delay between attempts (default 200 ms).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }

    /// Random jitter added to or taken from the retry delay (default 100 ms; at most the delay).
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.retry_jitter = Some(jitter);
        self
    }

    /// Clock drift allowance per unit of TTL (default 0.01; below 0.5).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = Some(factor);
        self
    }

    /// How long to wait for one node's answer (default TTL / 20, at most 1 s).
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = Some(timeout);
        self
    }

    /// The instance segment of the key (`redlock_{app}:{instance}:{resource}`; default `~`).
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into().into());
        self
    }

    /// What `lock` does when the lock is lost while its function runs (default [`OnLoss::Abort`]).
    pub fn on_loss(mut self, on_loss: OnLoss) -> Self {
        self.on_loss = Some(on_loss);
        self
    }

    /// Whether the lock draws a fencing token (default `true`).
    ///
    /// A token costs one counter key per resource on each node, kept forever
    /// (it must never go back). For an unbounded set of resources (one per
    /// request id, say) where no store checks tokens, turn it off:
    /// [`fencing_token`](crate::Lock::fencing_token) is then 0. Without a
    /// token, the uncontended acquire of one resource is a plain
    /// `SET … NX PX GET` rather than a script call (Redis 7.0 and later),
    /// about a third less work for each node.
    pub fn fencing(mut self, fencing: bool) -> Self {
        self.fencing = Some(fencing);
        self
    }

    /// True when no field is set: the call takes the engine's defaults as they are.
    pub(crate) fn is_unset(&self) -> bool {
        matches!(
            self,
            LockOptions {
                ttl: None,
                wait: None,
                retry_delay: None,
                retry_jitter: None,
                drift_factor: None,
                node_timeout: None,
                instance: None,
                on_loss: None,
                fencing: None,
            }
        )
    }

    /// `self`, with every unset field taken from `defaults`.
    pub(crate) fn or(&self, defaults: &LockOptions) -> LockOptions {
        LockOptions {
            ttl: self.ttl.or(defaults.ttl),
            wait: self.wait.or(defaults.wait),
            retry_delay: self.retry_delay.or(defaults.retry_delay),
            retry_jitter: self.retry_jitter.or(defaults.retry_jitter),
            drift_factor: self.drift_factor.or(defaults.drift_factor),
            node_timeout: self.node_timeout.or(defaults.node_timeout),
            instance: self.instance.clone().or_else(|| defaults.instance.clone()),
            on_loss: self.on_loss.or(defaults.on_loss),
            fencing: self.fencing.or(defaults.fencing),
        }
    }

    /// Checks every value and fills what is still unset with the crate defaults.
    pub(crate) fn resolve(&self) -> Result<Settings> {
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        let drift_factor = self.drift_factor.unwrap_or(DEFAULT_DRIFT_FACTOR);
        if !(0.0..0.5).contains(&drift_factor) {
            return Err(invalid(
                "drift_factor",
                format!("{drift_factor} is outside [0, 0.5); the usual value is 0.01"),
            ));
        }
        let lease = Lease::new(ttl, drift_factor)?;
        let node_timeout = self
            .node_timeout
            .unwrap_or_else(|| (ttl / NODE_TIMEOUT_DIVISOR).min(NODE_TIMEOUT_CAP));
        if node_timeout.is_zero() || node_timeout >= ttl - lease.drift {
            return Err(invalid(
                "node_timeout",
                format!(
                    "{node_timeout:?} must be above zero and well below the TTL ({ttl:?}); \
                     the default is TTL / 20"
                ),
            ));
        }
        let retry_delay = self.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY);
        if retry_delay < Duration::from_millis(1) {
            return Err(invalid(
                "retry_delay",
                format!(
                    "{retry_delay:?} would spin on the nodes; use at least 1 ms (default 200 ms)"
                ),
            ));
        }
        let retry_jitter = self.retry_jitter.unwrap_or(DEFAULT_RETRY_JITTER);
        if retry_jitter > retry_delay {
            return Err(invalid(
                "retry_jitter",
                format!("{retry_jitter:?} exceeds the retry delay {retry_delay:?}; make it at most the delay"),
            ));
        }
        let instance = match &self.instance {
            Some(instance) => instance.clone(),
            None => default_instance(),
        };
        resource::check_segment("instance", &instance)?;
        Ok(Settings {
            lease,
            drift_factor,
            wait: self.wait.flatten(),
            retry_delay,
            retry_jitter,
            node_timeout,
            instance,
            on_loss: self.on_loss.unwrap_or_default(),
            fencing: self.fencing.unwrap_or(true),
        })
    }
}

/// [`DEFAULT_INSTANCE`], shared rather than allocated per lock.
fn default_instance() -> Arc<str> {
    static INSTANCE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| DEFAULT_INSTANCE.into()).clone()
}

pub(crate) fn invalid(option: &'static str, reason: String) -> Error {
    Error::InvalidOptions { option, reason }
}

/// Options of one [`lock_isolate`](crate::Redlock::lock_isolate_with) call:
/// the lock options, and the data-source level to run the function at.
///
/// ```
/// use std::time::Duration;
/// use redlock_core::{IsolateOptions, LockOptions};
/// let opts = IsolateOptions::default()
///     .lock(LockOptions::default().ttl(Duration::from_secs(5)))
///     .level(3);
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct IsolateOptions {
    pub(crate) lock: LockOptions,
    pub(crate) level: Option<u32>,
}

impl IsolateOptions {
    /// The lock options (TTL, wait, ...).
    pub fn lock(mut self, lock: LockOptions) -> Self {
        self.lock = lock;
        self
    }

    /// Run the function at this level instead of the current level + 1.
    pub fn level(mut self, level: u32) -> Self {
        self.level = Some(level);
        self
    }
}

impl From<LockOptions> for IsolateOptions {
    fn from(lock: LockOptions) -> Self {
        IsolateOptions { lock, level: None }
    }
}

/// Checked, complete options of one call.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub lease: Lease,
    pub drift_factor: f64,
    pub wait: Option<Duration>,
    pub retry_delay: Duration,
    pub retry_jitter: Duration,
    pub node_timeout: Duration,
    pub instance: Arc<str>,
    pub on_loss: OnLoss,
    pub fencing: bool,
}

impl Settings {
    /// The lease of an extension to `ttl`, with this lock's drift factor.
    pub fn lease(&self, ttl: Duration) -> Result<Lease> {
        if ttl == self.lease.ttl {
            return Ok(self.lease);
        }
        Lease::new(ttl, self.drift_factor)
    }
}

/// A TTL and the clock drift allowed on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub ttl: Duration,
    pub ttl_ms: u64,
    pub drift: Duration,
}

impl Lease {
    fn new(ttl: Duration, drift_factor: f64) -> Result<Lease> {
        let drift = ttl.mul_f64(drift_factor) + DRIFT_FLOOR;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl > MAX_TTL {
            return Err(invalid(
                "ttl",
                format!("{ttl:?} is over the limit of {MAX_TTL:?}; `lock` extends the lock while it runs, so use a TTL of seconds"),
            ));
        }
        if ttl <= drift * 2 {
            return Err(invalid(
                "ttl",
                format!(
                    "{ttl:?} leaves no validity after the clock drift allowance of {drift:?}; \
                     use a TTL of at least 10 ms (seconds in production)"
                ),
            ));
        }
        Ok(Lease { ttl, ttl_ms, drift })
    }

    /// The validity of this lease when its attempt started `elapsed` ago; `None` when not positive.
    pub fn validity(&self, elapsed: Duration) -> Option<Duration> {
        self.ttl
            .checked_sub(elapsed)
            .and_then(|left| left.checked_sub(self.drift))
            .filter(|v| !v.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let s = LockOptions::default().resolve().unwrap();
        assert_eq!(s.lease.ttl, DEFAULT_TTL);
        assert_eq!(s.lease.drift, Duration::from_millis(302));
        assert_eq!(s.node_timeout, Duration::from_secs(1));
        assert_eq!(&*s.instance, "~");
        assert_eq!(s.wait, None);
    }

    #[test]
    fn tiny_ttl_is_rejected() {
        for ttl in [0, 1, 4] {
            let err = LockOptions::default()
                .ttl(Duration::from_millis(ttl))
                .resolve()
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidOptions { option: "ttl", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn jitter_above_delay_is_rejected() {
        let err = LockOptions::default()
            .retry_delay(Duration::from_millis(10))
            .retry_jitter(Duration::from_millis(20))
            .resolve()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidOptions {
                option: "retry_jitter",
                ..
            }
        ));
    }

    #[test]
    fn validity_is_ttl_minus_elapsed_minus_drift() {
        let s = LockOptions::default()
            .ttl(Duration::from_secs(10))
            .resolve()
            .unwrap();
        assert_eq!(
            s.lease.validity(Duration::from_secs(1)),
            Some(Duration::from_millis(8898))
        );
        assert_eq!(s.lease.validity(Duration::from_secs(10)), None);
    }
}
