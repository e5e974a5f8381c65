//! The process's limit on open files, raised at start-up to what the
//! system allows.
//!
//! Each warm 2025 MCP session holds a connection of its own (its GET
//! stream), besides the pooled ones its requests use, so a node serving a
//! thousand users needs a few thousand file descriptors. Services are
//! often started with a soft limit of 1024 (systemd's default, and
//! containerd's since 2.0) under a far higher hard limit; the soft limit
//! exists to be raised by programs that need more, as Go's runtime does
//! at start-up. mcpgram uses no `select(2)`, the reason the default is low.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Below this many open files, the admin is told (about half as many warm
/// sessions fit).
pub const ENOUGH: u64 = 4096;

/// Linux's default `fs.nr_open`: the most a soft limit can be raised to
/// when the hard limit is unlimited.
const UNLIMITED_AS: u64 = 1 << 20;

/// What start-up found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The soft limit was raised from `from` to `to`.
    Raised { from: u64, to: u64 },
    /// Already as high as allowed (`None`: unlimited).
    Kept(Option<u64>),
    /// The system refused to raise it from `at`.
    Refused { at: u64 },
}

impl Limit {
    /// The limit in force now (`None`: unlimited).
    pub fn now(self) -> Option<u64> {
        match self {
            Limit::Raised { to, .. } => Some(to),
            Limit::Kept(limit) => limit,
            Limit::Refused { at } => Some(at),
        }
    }

    /// Whether the limit in force leaves room for the sessions of a
    /// thousand users.
    pub fn is_enough(self) -> bool {
        self.now().is_none_or(|limit| limit >= ENOUGH)
    }
}

/// Raises the soft limit on open files to the hard one.
pub fn raise() -> Limit {
    let limit = getrlimit(Resource::Nofile);
    let Some(from) = limit.current else {
        return Limit::Kept(None);
    };
    let to = limit.maximum.unwrap_or(UNLIMITED_AS);
    if from >= to {
        return Limit::Kept(Some(from));
    }
    let raised = Rlimit {
        current: Some(to),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Limit::Raised { from, to },
        Err(_) => Limit::Refused { at: from },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let outcome = raise();
        let limit = getrlimit(Resource::Nofile);
        match outcome {
            Limit::Raised { to, .. } | Limit::Kept(Some(to)) => {
                assert_eq!(limit.current, Some(to));
                assert_eq!(limit.maximum.unwrap_or(UNLIMITED_AS), to);
            }
            other => panic!("{other:?} with {limit:?}"),
        }
        assert_eq!(raise(), Limit::Kept(limit.current), "a second time: kept");
    }

    #[test]
    fn a_low_limit_is_not_enough() {
        assert!(!Limit::Kept(Some(1024)).is_enough());
        assert!(!Limit::Refused { at: 1024 }.is_enough());
        assert!(
            Limit::Raised {
                from: 1024,
                to: 524_288
            }
            .is_enough()
        );
        assert!(Limit::Kept(None).is_enough());
    }
}
