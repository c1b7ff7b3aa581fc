//! The checks every field read off the wire must pass, and how a disk is cut down to fit.

use super::*;

/// Check every field against the limits.
pub fn validate(env: &Envelope) -> Result<(), Reject> {
    let bad = Err(Reject::InvalidField);
    if !valid_node_id(&env.node_id) {
        return bad;
    }
    if env.node.is_empty()
        || !printable(&env.node, limits::NODE_NAME)
        || env.node.contains(char::is_whitespace)
    {
        return bad;
    }
    let mount_ok = match &env.body {
        Body::MountRequest(r) => valid_node_id(&r.target) && valid_uuid(&r.uuid),
        Body::MountReply(r) => {
            valid_node_id(&r.target)
                && r.device
                    .as_deref()
                    .is_none_or(|d| printable(d, limits::DEVICE))
                && r.mountpoint
                    .as_deref()
                    .is_none_or(|m| printable(m, limits::MOUNTPOINT))
                && printable(&r.message, 512)
        }
        _ => true,
    };
    if !mount_ok {
        return bad;
    }
    if let Body::Members(page) = &env.body {
        if page.count == 0
            || page.index >= page.count
            || page.members.len() > MEMBERS_PER_PAGE
            || page.members.iter().any(|m| m.node == 0)
        {
            return bad;
        }
    }
    if let Body::Inventory(c) = &env.body {
        if c.count == 0 || c.count > limits::CHUNKS || c.index >= c.count {
            return Err(Reject::BadChunk);
        }
        if c.total > limits::DISKS_PER_PEER || c.disks.len() > limits::DISKS_PER_CHUNK {
            return bad;
        }
        for d in &c.disks {
            if !valid_disk(d) {
                return bad;
            }
        }
    }
    Ok(())
}

/// Whether a disk record from the wire is within bounds.
pub fn valid_disk(d: &DiskRecord) -> bool {
    let opt = |v: &Option<String>, max: usize| v.as_deref().is_none_or(|s| s.len() <= max);
    opt(&d.uuid, limits::UUID)
        && d.uuid.as_deref().is_none_or(|u| printable(u, limits::UUID))
        && opt(&d.label, limits::LABEL)
        && d.label.as_deref().is_none_or(|l| !l.contains('\0'))
        && !d.device.is_empty()
        && printable(&d.device, limits::DEVICE)
        && opt(&d.fstype, limits::FSTYPE)
        && d.fstype
            .as_deref()
            .is_none_or(|f| printable(f, limits::FSTYPE))
        && d.mountpoints.len() <= limits::MOUNTPOINTS
        && d.mountpoints
            .iter()
            .all(|m| m.len() <= limits::MOUNTPOINT && !m.contains('\0'))
        && valid_hardware(&d.hardware)
        && d.health.as_ref().is_none_or(valid_health)
        && d.fs.as_ref().is_none_or(valid_fs)
}

/// Whether hardware from the wire is within bounds: short printable text, a sane
/// transport name, and paths within the device and file limits.
pub fn valid_hardware(h: &Hardware) -> bool {
    let text = |v: &Option<String>, max: usize| v.as_deref().is_none_or(|s| printable(s, max));
    text(&h.model, limits::HARDWARE_TEXT)
        && text(&h.vendor, limits::HARDWARE_TEXT)
        && text(&h.serial, limits::HARDWARE_TEXT)
        && text(&h.wwn, limits::HARDWARE_TEXT)
        && text(&h.transport, limits::TRANSPORT)
        && text(&h.parent, limits::DEVICE)
        && text(&h.backing_file, limits::BACKING_FILE)
}

/// Make a disk fit the wire limits (a local label or mount list can be longer than a
/// peer would accept): extra mountpoints are left out rather than the whole disk.
pub fn fit_disk(d: &DiskRecord) -> Option<DiskRecord> {
    let mut d = d.clone();
    d.mountpoints
        .retain(|m| m.len() <= limits::MOUNTPOINT && !m.contains('\0'));
    d.mountpoints.truncate(limits::MOUNTPOINTS);
    if !valid_hardware(&d.hardware) {
        // The disk matters more than what its hardware says. Its health goes too: without
        // its `parent`, a partition's copy of its disk's reading would pass for a disk's.
        d.hardware = Hardware::default();
        d.health = None;
    }
    // And more than its condition: what does not fit the bounds is cut or left out.
    fit_condition(&mut d);
    valid_disk(&d).then_some(d)
}
