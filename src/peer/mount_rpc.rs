//! Mount requests over a lossy group: our outgoing requests and the ones we served.
//!
//! Datagrams get lost, so a request of ours is resent on a doubling schedule from
//! `MOUNT_RETRY` until the owner answers or `MOUNT_TIMEOUT` passes. The owner, in turn,
//! remembers the requests it served (up to `SERVED_MEMORY`) so that a retry of one it
//! already carried out gets the same answer again instead of mounting twice.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::wire::{MountReply, MountRequest};
use super::PeerError;

/// How long a mount request waits for the owner's answer.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry of a mount request; doubled after each.
pub const MOUNT_RETRY: Duration = Duration::from_millis(300);
/// Remote requests remembered for idempotency (answers to retries).
pub const SERVED_MEMORY: usize = 1024;

/// Where the answer to one of our requests goes.
pub type ReplyTo = oneshot::Sender<Result<MountReply, PeerError>>;

/// A remote request, by requester node id and request id.
pub type ServedKey = (String, u64);

/// A mount request of ours awaiting its answer.
struct Outgoing {
    request: MountRequest,
    reply: ReplyTo,
    deadline: Instant,
    next: Instant,
    backoff: Duration,
}

/// What to do with a remote request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// Never seen: carry it out (it is now remembered as in progress).
    New,
    /// A retry of one being carried out: its answer will go out when ready.
    InProgress,
    /// A retry of one already answered: send this answer again.
    Repeat(MountReply),
}

/// Both sides of the mount RPC.
#[derive(Default)]
pub struct MountRpc {
    /// Our mount requests awaiting answers, by request id.
    outgoing: HashMap<u64, Outgoing>,
    /// Remote requests seen: `None` while being carried out, then the answer.
    served: HashMap<ServedKey, Option<MountReply>>,
    served_order: VecDeque<ServedKey>,
}

impl MountRpc {
    /// A request of ours was just sent: wait for its answer, retrying.
    pub fn start(&mut self, request: MountRequest, reply: ReplyTo, now: Instant) {
        self.outgoing.insert(
            request.request_id,
            Outgoing {
                request,
                reply,
                deadline: now + MOUNT_TIMEOUT,
                next: now + MOUNT_RETRY,
                backoff: MOUNT_RETRY,
            },
        );
    }

    /// When something is next due (a retry or a deadline).
    pub fn next_due(&self) -> Option<Instant> {
        self.outgoing.values().map(|o| o.next.min(o.deadline)).min()
    }

    /// Requests in flight.
    pub fn pending(&self) -> usize {
        self.outgoing.len()
    }

    /// Fail the requests past their deadline; return those due for a resend (their next
    /// retry is scheduled twice as far as the last).
    pub fn due(&mut self, now: Instant) -> Vec<MountRequest> {
        let expired: Vec<u64> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(o) = self.outgoing.remove(&id) {
                let _ = o.reply.send(Err(PeerError::NoReply(MOUNT_TIMEOUT)));
            }
        }
        self.outgoing
            .values_mut()
            .filter(|o| o.next <= now)
            .map(|o| {
                o.backoff *= 2;
                o.next = now + o.backoff;
                o.request.clone()
            })
            .collect()
    }

    /// The owner answered one of ours; false when it was not (or no longer) awaited.
    pub fn answered(&mut self, reply: MountReply) -> bool {
        match self.outgoing.remove(&reply.request_id) {
            Some(o) => {
                let _ = o.reply.send(Ok(reply));
                true
            }
            None => false,
        }
    }

    /// Fail every request of ours awaiting an answer (the sockets went down).
    pub fn fail_all(&mut self, why: &std::io::Error) {
        for (_, o) in self.outgoing.drain() {
            let _ = o.reply.send(Err(PeerError::Down(why.to_string())));
        }
    }

    /// A remote request arrived.
    pub fn serve(&mut self, key: ServedKey) -> Serve {
        if let Some(done) = self.served.get(&key) {
            return match done {
                Some(reply) => Serve::Repeat(reply.clone()),
                None => Serve::InProgress,
            };
        }
        if self.served_order.len() >= SERVED_MEMORY {
            if let Some(old) = self.served_order.pop_front() {
                self.served.remove(&old);
            }
        }
        self.served.insert(key.clone(), None);
        self.served_order.push_back(key);
        Serve::New
    }

    /// A remote request was carried out: remember the answer for its retries.
    pub fn served(&mut self, key: &ServedKey, reply: &MountReply) {
        if let Some(slot) = self.served.get_mut(key) {
            *slot = Some(reply.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64) -> MountRequest {
        MountRequest {
            request_id: id,
            target: "owner".into(),
            uuid: "u1".into(),
            read_only: false,
            unmount: false,
        }
    }

    fn reply(id: u64, message: &str) -> MountReply {
        MountReply {
            request_id: id,
            target: "me".into(),
            ok: true,
            device: Some("/dev/sdb1".into()),
            mountpoint: Some("/srv/diskd/u1".into()),
            message: message.into(),
        }
    }

    /// A layer that started request `id` now: the time, the layer, and where its answer
    /// goes.
    fn started(
        id: u64,
    ) -> (
        Instant,
        MountRpc,
        oneshot::Receiver<Result<MountReply, PeerError>>,
    ) {
        let t0 = Instant::now();
        let mut rpc = MountRpc::default();
        let (tx, rx) = oneshot::channel();
        rpc.start(request(id), tx, t0);
        (t0, rpc, rx)
    }

    /// Step through time as the layer's timer would: wake at each `next_due`.
    #[test]
    fn retries_double_from_300ms_and_fail_at_the_timeout() {
        let (t0, mut rpc, mut rx) = started(1);
        let mut resent = Vec::new();
        while let Some(t) = rpc.next_due() {
            for r in rpc.due(t) {
                assert_eq!(r.request_id, 1);
                resent.push(t - t0);
            }
        }
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(resent, ms(&[300, 900, 2100, 4500, 9300]));
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(PeerError::NoReply(d))) if d == MOUNT_TIMEOUT
        ));
        assert_eq!(rpc.pending(), 0);
    }

    #[test]
    fn nothing_is_resent_before_it_is_due_and_an_answer_ends_the_retries() {
        let (t0, mut rpc, mut rx) = started(7);
        assert_eq!(rpc.next_due(), Some(t0 + MOUNT_RETRY));
        assert!(rpc.due(t0 + Duration::from_millis(299)).is_empty());
        assert!(!rpc.answered(reply(8, "not ours")));
        assert!(rpc.answered(reply(7, "mounted")));
        assert_eq!(rx.try_recv().unwrap().unwrap().message, "mounted");
        assert_eq!(rpc.next_due(), None);
        assert!(rpc.due(t0 + MOUNT_TIMEOUT).is_empty());
    }

    #[test]
    fn served_requests_are_answered_idempotently_within_a_bounded_memory() {
        let mut rpc = MountRpc::default();
        let key = ("requester".to_string(), 42);
        assert_eq!(rpc.serve(key.clone()), Serve::New);
        assert_eq!(rpc.serve(key.clone()), Serve::InProgress);
        rpc.served(&key, &reply(42, "mounted"));
        assert_eq!(rpc.serve(key.clone()), Serve::Repeat(reply(42, "mounted")));
        // The same request id from another requester is another request.
        assert_eq!(rpc.serve(("other".into(), 42)), Serve::New);
        for i in 0..SERVED_MEMORY as u64 {
            rpc.serve(("flood".into(), i));
        }
        assert!(rpc.served.len() <= SERVED_MEMORY);
        assert_eq!(rpc.serve(key), Serve::New, "the oldest was forgotten");
    }

    #[test]
    fn fail_all_answers_every_waiting_request() {
        let mut rpc = MountRpc::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let now = Instant::now();
        rpc.start(request(1), tx1, now);
        rpc.start(request(2), tx2, now);
        rpc.fail_all(&std::io::Error::other("link down"));
        assert!(matches!(rx1.try_recv(), Ok(Err(PeerError::Down(_)))));
        assert!(matches!(rx2.try_recv(), Ok(Err(PeerError::Down(_)))));
        assert_eq!(rpc.pending(), 0);
    }
}
