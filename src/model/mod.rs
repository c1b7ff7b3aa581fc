//! The leaf layer: the types, limits and checks that every other module shares.
//!
//! Nothing here imports another module of this crate, so the store, the watchers' writer,
//! the peer layer, the mount service and the control server can all depend on it without
//! depending on each other. Data flows `inventory -> store -> peer / control`; the
//! vocabulary they exchange lives here.

mod backoff;
pub mod fleet;
pub mod layout;
pub mod limits;
mod node;
mod records;
mod validate;

pub use backoff::Backoff;
pub use fleet::{FleetEvent, FleetEventKind};
pub use node::{addresses, NodeInfo};
pub use records::{
    identity_parts, matches, wwn_key, AttachRecord, DiskHealth, DiskRecord, FsUsage, Hardware,
    HealthPoint, HealthState, PeerRecord, Probe, Sighting, Stay, LEGACY_EXPIRY,
};
pub use validate::{printable, valid_node_id, valid_uuid};

/// Milliseconds since the Unix epoch; the clock unit of records and the store.
pub type Millis = u64;

/// The current wall-clock time in record units.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// RFC 3339 text of a record time, as every JSON shape and table shows it.
pub fn rfc3339(t: Millis) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(t))
        .to_string()
}
