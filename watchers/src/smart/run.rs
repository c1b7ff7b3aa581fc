//! Running smartctl (placeholder until the watcher lands).

use std::time::Duration;

use async_trait::async_trait;

use super::SmartWatcherConfig;
use crate::{Observation, WatchError, Watcher};

/// Reads the SMART health of every whole disk.
#[derive(Debug)]
pub struct SmartWatcher {
    cfg: SmartWatcherConfig,
}

impl SmartWatcher {
    /// The watcher's name (`status`, `refresh`).
    pub const NAME: &'static str = "smart";

    /// A watcher with these settings.
    pub fn new(cfg: SmartWatcherConfig) -> SmartWatcher {
        SmartWatcher { cfg }
    }
}

#[async_trait]
impl Watcher for SmartWatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    async fn scan(&self) -> Result<Observation, WatchError> {
        Ok(Observation::Smart(Vec::new()))
    }
}
