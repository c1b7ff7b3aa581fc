//! What a key holder's gossip packet reaches once unsealed: the foca engine's decoder and
//! state machine (membership updates, notices), then the timers it schedules. It must
//! refuse garbage with an error, never panic or grow without bound.
#![no_main]

use std::time::Duration;

use diskd::peer::gossip::{Gossip, MemberId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let me = MemberId {
        node: 1,
        addr: ([10, 0, 0, 1], 32004).into(),
        bump: 1,
    };
    let mut g = Gossip::new(me, Duration::from_millis(500), 1200, 0);
    let now = tokio::time::Instant::now();
    // Two halves as two packets: the second meets the state the first left.
    let (a, b) = data.split_at(data.len() / 2);
    let _ = g.handle_data(a, now);
    let _ = g.handle_data(b, now);
    let _ = g.fire_due(now + Duration::from_secs(60));
});
