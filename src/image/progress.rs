//! Progress of one pull, updated by its layer tasks and read by whoever displays it.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPhase {
    Waiting,
    Downloading,
    Unpacking,
    Done,
    /// Already present before this pull.
    Exists,
}

impl LayerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerPhase::Waiting => "waiting",
            LayerPhase::Downloading => "downloading",
            LayerPhase::Unpacking => "unpacking",
            LayerPhase::Done => "done",
            LayerPhase::Exists => "exists",
        }
    }

    fn from_u8(v: u8) -> LayerPhase {
        match v {
            1 => LayerPhase::Downloading,
            2 => LayerPhase::Unpacking,
            3 => LayerPhase::Done,
            4 => LayerPhase::Exists,
            _ => LayerPhase::Waiting,
        }
    }
}

#[derive(Debug)]
pub struct LayerProgress {
    pub digest: String,
    pub size: u64,
    downloaded: AtomicU64,
    phase: AtomicU8,
}

impl LayerProgress {
    pub fn set_phase(&self, phase: LayerPhase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn set_downloaded(&self, bytes: u64) {
        self.downloaded.store(bytes, Ordering::Relaxed);
    }

    pub fn add_downloaded(&self, bytes: u64) {
        self.downloaded.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A layer as last seen: digest, size, bytes downloaded, phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSnapshot {
    pub digest: String,
    pub size: u64,
    pub downloaded: u64,
    pub phase: LayerPhase,
}

#[derive(Debug, Default)]
pub struct PullProgress {
    layers: Mutex<Vec<Arc<LayerProgress>>>,
}

impl PullProgress {
    pub fn add_layer(&self, digest: &str, size: u64) -> Arc<LayerProgress> {
        let layer = Arc::new(LayerProgress {
            digest: digest.to_string(),
            size,
            downloaded: AtomicU64::new(0),
            phase: AtomicU8::new(LayerPhase::Waiting as u8),
        });
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(layer.clone());
        layer
    }

    pub fn snapshot(&self) -> Vec<LayerSnapshot> {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| LayerSnapshot {
                digest: l.digest.clone(),
                size: l.size,
                downloaded: l.downloaded.load(Ordering::Relaxed),
                phase: LayerPhase::from_u8(l.phase.load(Ordering::Relaxed)),
            })
            .collect()
    }
}
