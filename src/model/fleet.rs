//! Changes of the fleet picture: what `events` streams, what `wait` waits for and what
//! hooks run on.
//!
//! An event is made where the picture changes (a stored inventory differs from the one
//! before, a peer becomes live or is lost), never from a datagram as such: a re-announce of
//! an unchanged inventory changes nothing and so says nothing.

use serde::{Deserialize, Serialize};

use super::{rfc3339, DiskRecord, HealthState, Millis};

/// The kinds of change, named as users write them (`on: [appeared, mounted]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FleetEventKind {
    /// A disk is live on a host where it was not (plugged in, or its host came back).
    Appeared,
    /// A disk left a host's inventory, or its host was lost (it stays as last known).
    Vanished,
    /// A disk's label, filesystem type or device changed.
    Changed,
    /// A disk got a mountpoint (also sent after `appeared` for a disk that arrives mounted).
    Mounted,
    /// A disk lost its last mountpoint.
    Unmounted,
    /// A peer became live (new, back, or restarted after it was lost).
    PeerLive,
    /// A peer was lost: it said goodbye, expired, or the failure detector declared it down.
    PeerLost,
    /// A physical disk's SMART verdict changed (`ok` to `warning`, ...); also sent for a
    /// disk whose first reading is `warning` or `failing`. Once per disk: on the whole
    /// disk's record, not again on each partition that shows its reading.
    HealthChanged,
}

impl FleetEventKind {
    /// Every kind, in documentation order.
    pub const ALL: [FleetEventKind; 8] = [
        FleetEventKind::Appeared,
        FleetEventKind::Vanished,
        FleetEventKind::Changed,
        FleetEventKind::Mounted,
        FleetEventKind::Unmounted,
        FleetEventKind::PeerLive,
        FleetEventKind::PeerLost,
        FleetEventKind::HealthChanged,
    ];

    /// The name users write and see.
    pub fn name(self) -> &'static str {
        match self {
            FleetEventKind::Appeared => "appeared",
            FleetEventKind::Vanished => "vanished",
            FleetEventKind::Changed => "changed",
            FleetEventKind::Mounted => "mounted",
            FleetEventKind::Unmounted => "unmounted",
            FleetEventKind::PeerLive => "peer-live",
            FleetEventKind::PeerLost => "peer-lost",
            FleetEventKind::HealthChanged => "health-changed",
        }
    }

    /// The kind with this name.
    pub fn parse(name: &str) -> Option<FleetEventKind> {
        FleetEventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it is about a peer rather than a disk.
    pub fn is_peer(self) -> bool {
        matches!(self, FleetEventKind::PeerLive | FleetEventKind::PeerLost)
    }
}

/// One change of the fleet picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEvent {
    /// What happened.
    pub kind: FleetEventKind,
    /// When this daemon saw it.
    pub time: Millis,
    /// The host's node id.
    pub node_id: String,
    /// The host's node name.
    pub host: String,
    /// The host's address.
    pub addr: Option<String>,
    /// The disk, for disk events (as it is now; as it was last, for `vanished`).
    pub disk: Option<DiskRecord>,
    /// Whether the host is this machine.
    pub local: bool,
    /// Whether it can be trusted as the host's word: this machine's own events, and those
    /// of a peer whose datagrams our keyring opened. A peer heard unsealed (no keys, or a
    /// legacy Perl peer) could be anyone on the LAN: hooks run on its events only when
    /// told to (`allow_unsealed`).
    pub sealed: bool,
    /// For `health-changed`: the verdict before (`None`: the disk had no reading).
    pub health_was: Option<HealthState>,
}

impl FleetEvent {
    /// A disk event.
    pub fn disk(
        kind: FleetEventKind,
        time: Millis,
        host: &Host<'_>,
        disk: &DiskRecord,
    ) -> FleetEvent {
        FleetEvent {
            disk: Some(disk.clone()),
            ..FleetEvent::peer(kind, time, host)
        }
    }

    /// A peer event (and the host part of a disk event).
    pub fn peer(kind: FleetEventKind, time: Millis, host: &Host<'_>) -> FleetEvent {
        FleetEvent {
            kind,
            time,
            node_id: host.node_id.to_string(),
            host: host.name.to_string(),
            addr: host.addr.map(str::to_string),
            disk: None,
            local: host.local,
            sealed: host.local || host.sealed,
            health_was: None,
        }
    }

    /// The `events --json` object: `event`, `time`, the disk's fields as `query --json`
    /// names them (or the peer's, as `peers --json` does), `local` and `sealed`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("event".into(), self.kind.name().into());
        o.insert("time".into(), rfc3339(self.time).into());
        match &self.disk {
            Some(d) => {
                o.insert("host".into(), self.host.clone().into());
                o.insert("addr".into(), self.addr.clone().into());
                o.insert("uuid".into(), d.uuid.clone().into());
                o.insert("label".into(), d.label.clone().into());
                o.insert("device".into(), d.device.clone().into());
                o.insert("fstype".into(), d.fstype.clone().into());
                o.insert("mountpoints".into(), d.mountpoints.clone().into());
                if let Ok(serde_json::Value::Object(hw)) = serde_json::to_value(&d.hardware) {
                    o.extend(hw);
                }
                // As `query --json` shows it: the reading's time in RFC 3339.
                let mut health = serde_json::to_value(&d.health).unwrap_or_default();
                if let Some(checked) = d.health.as_ref().and_then(|h| h.checked) {
                    health["checked"] = rfc3339(checked).into();
                }
                o.insert("health".into(), health);
                o.insert("fs_size".into(), d.fs.map(|u| u.size).into());
                o.insert("fs_used".into(), d.fs.map(|u| u.used).into());
                o.insert("fs_avail".into(), d.fs.map(|u| u.avail).into());
                if self.kind == FleetEventKind::HealthChanged {
                    o.insert(
                        "health_was".into(),
                        self.health_was.map(HealthState::as_str).into(),
                    );
                }
            }
            None => {
                o.insert("node".into(), self.host.clone().into());
                o.insert("node_id".into(), self.node_id.clone().into());
                o.insert("addr".into(), self.addr.clone().into());
            }
        }
        o.insert("local".into(), self.local.into());
        o.insert("sealed".into(), self.sealed.into());
        serde_json::Value::Object(o)
    }
}

/// The host an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Its node id.
    pub node_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its address.
    pub addr: Option<&'a str>,
    /// Whether it is this machine.
    pub local: bool,
    /// Whether what it says came sealed under one of our keys (see [`FleetEvent::sealed`];
    /// this machine counts as sealed whatever this says).
    pub sealed: bool,
}

/// The events one disk's change makes: `was` is the disk before (None: it is new).
pub fn disk_change(
    was: Option<&DiskRecord>,
    now: &DiskRecord,
    time: Millis,
    host: &Host<'_>,
) -> Vec<FleetEvent> {
    let mut out = Vec::new();
    let ev = |k| FleetEvent::disk(k, time, host, now);
    match was {
        None => {
            out.push(ev(FleetEventKind::Appeared));
            if !now.mountpoints.is_empty() {
                out.push(ev(FleetEventKind::Mounted));
            }
        }
        Some(was) => {
            if was.uuid != now.uuid
                || was.label != now.label
                || was.fstype != now.fstype
                || was.device != now.device
            {
                out.push(ev(FleetEventKind::Changed));
            }
            if now.mountpoints.iter().any(|m| !was.mountpoints.contains(m)) {
                out.push(ev(FleetEventKind::Mounted));
            } else if !was.mountpoints.is_empty() && now.mountpoints.is_empty() {
                out.push(ev(FleetEventKind::Unmounted));
            }
        }
    }
    let state = |d: Option<&DiskRecord>| d.and_then(|d| d.health.as_ref()).map(|h| h.state);
    let (before, after) = (state(was), state(Some(now)));
    let alarming = matches!(after, Some(HealthState::Warning | HealthState::Failing));
    if now.hardware.parent.is_none()
        && after.is_some()
        && before != after
        && (before.is_some() || alarming)
    {
        out.push(FleetEvent {
            health_was: before,
            ..ev(FleetEventKind::HealthChanged)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(label: &str, mounts: &[&str]) -> DiskRecord {
        DiskRecord {
            probe: Default::default(),
            uuid: Some("6fe176fb-0000-4000-8000-000000000001".into()),
            label: Some(label.into()),
            device: "/dev/sdb1".into(),
            fstype: Some("ext4".into()),
            mountpoints: mounts.iter().map(|m| m.to_string()).collect(),
            hardware: Default::default(),
            health: None,
            fs: None,
        }
    }

    const HOST: Host<'static> = Host {
        node_id: "00000000000000000000000000000001",
        name: "a",
        addr: Some("198.18.0.1"),
        local: false,
        sealed: true,
    };

    fn kinds(v: Vec<FleetEvent>) -> Vec<&'static str> {
        v.into_iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn each_change_says_what_changed_once() {
        assert_eq!(
            kinds(disk_change(None, &d("x", &[]), 1, &HOST)),
            ["appeared"]
        );
        assert_eq!(
            kinds(disk_change(None, &d("x", &["/m"]), 1, &HOST)),
            ["appeared", "mounted"]
        );
        let before = d("x", &[]);
        assert_eq!(
            kinds(disk_change(Some(&before), &d("x", &["/m"]), 1, &HOST)),
            ["mounted"]
        );
        assert_eq!(
            kinds(disk_change(Some(&d("x", &["/m"])), &d("x", &[]), 1, &HOST)),
            ["unmounted"]
        );
        assert_eq!(
            kinds(disk_change(Some(&before), &d("y", &[]), 1, &HOST)),
            ["changed"]
        );
        assert!(disk_change(Some(&before), &d("x", &[]), 1, &HOST).is_empty());
    }

    fn health(state: HealthState) -> Option<crate::model::DiskHealth> {
        Some(crate::model::DiskHealth {
            state,
            ..Default::default()
        })
    }

    #[test]
    fn health_changes_once_per_disk_with_the_state_before() {
        let with = |state: Option<HealthState>, partition: bool| {
            let mut disk = d("x", &[]);
            disk.health = state.and_then(health);
            disk.hardware.parent = partition.then(|| "/dev/sdb".to_string());
            disk
        };
        let ok = with(Some(HealthState::Ok), false);
        let mut failing = with(Some(HealthState::Failing), false);
        if let Some(h) = failing.health.as_mut() {
            h.checked = Some(1_765_000_000_000);
        }
        let ev = disk_change(Some(&ok), &failing, 1, &HOST);
        assert_eq!(kinds(ev.clone()), ["health-changed"]);
        assert_eq!(ev[0].health_was, Some(HealthState::Ok));
        let j = ev[0].to_json();
        assert_eq!(j["health"]["state"], "failing");
        assert_eq!(j["health_was"], "ok");
        assert_eq!(
            j["health"]["checked"], "2025-12-06T05:46:40Z",
            "as query --json shows it"
        );
        // The same reading again says nothing; a partition showing its disk's says nothing.
        assert!(disk_change(Some(&failing), &failing, 1, &HOST).is_empty());
        let part = |s| with(Some(s), true);
        assert!(disk_change(
            Some(&part(HealthState::Ok)),
            &part(HealthState::Failing),
            1,
            &HOST
        )
        .is_empty());
        // A first reading is news only when it is bad; losing the reading is not news.
        assert!(disk_change(Some(&with(None, false)), &ok, 1, &HOST).is_empty());
        assert_eq!(
            kinds(disk_change(Some(&with(None, false)), &failing, 1, &HOST)),
            ["health-changed"]
        );
        assert_eq!(
            kinds(disk_change(None, &failing, 1, &HOST)),
            ["appeared", "health-changed"]
        );
        assert!(disk_change(Some(&ok), &with(None, false), 1, &HOST).is_empty());
    }

    #[test]
    fn names_round_trip_and_json_has_the_interface_fields() {
        for k in FleetEventKind::ALL {
            assert_eq!(FleetEventKind::parse(k.name()), Some(k));
        }
        assert_eq!(FleetEventKind::parse("plugged"), None);
        let j = disk_change(None, &d("x; $(id)", &["/m"]), 0, &HOST)[0].to_json();
        for key in [
            "event",
            "time",
            "host",
            "addr",
            "uuid",
            "label",
            "device",
            "fstype",
            "mountpoints",
            "local",
            "sealed",
        ] {
            assert!(j.get(key).is_some(), "{key} missing in {j}");
        }
        assert_eq!(j["label"], "x; $(id)");
        let p = FleetEvent::peer(FleetEventKind::PeerLost, 0, &HOST).to_json();
        assert_eq!(p["event"], "peer-lost");
        assert_eq!(p["node"], "a");
    }
}
