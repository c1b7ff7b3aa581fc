//! The serve loop: one task that owns the layer and waits on everything it reacts to (the
//! sockets, requests, store changes, timers, shutdown), in a fixed order so that one seed
//! gives one run in `diskd-bench sim`.

use super::*;

/// Receive on the gossip socket, or never when gossip does not run.
async fn recv_gossip<G: Unicast>(
    g: Option<&G>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match g {
        Some(g) => g.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// The next datagram from either socket, trying `gossip_first`'s choice first when both
/// have one (the serve loop alternates, so neither can starve the other).
async fn recv_any<T: Transport, G: Unicast>(
    t: &T,
    g: Option<&G>,
    buf: &mut [u8],
    gbuf: &mut [u8],
    gossip_first: bool,
) -> (Path, std::io::Result<(usize, std::net::SocketAddr)>) {
    if gossip_first {
        tokio::select! {
            biased;
            r = recv_gossip(g, gbuf) => (Path::Gossip, r),
            r = t.recv(buf) => (Path::Multicast, r),
        }
    } else {
        tokio::select! {
            biased;
            r = t.recv(buf) => (Path::Multicast, r),
            r = recv_gossip(g, gbuf) => (Path::Gossip, r),
        }
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Layer {
    /// Serve until shutdown (Ok) or a multicast transport error (Err: reopen).
    pub(super) async fn serve<T: Transport, G: Unicast>(
        &mut self,
        t: &T,
        g: Option<&G>,
        requests: &mut mpsc::Receiver<PeerRequest>,
        resolved: &mut mpsc::Receiver<gossip_io::Resolved>,
    ) -> std::io::Result<()> {
        let ctx = self.ctx.clone();
        let interval = ctx.config().multicast.announce_interval;
        self.changed_announce(t).await?;
        self.send(t, Body::Ping).await?;
        let mut next_announce = self.clock.instant() + interval;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
        let mut gbuf = vec![0u8; wire::MAX_DATAGRAM + 1];
        let mut gossip_first = false;
        let mut just_received = false;
        loop {
            if let Some(g) = g {
                if self.outbox_pending() {
                    self.flush_outbox(g).await;
                }
            }
            // Biased (branches are polled in this order), so that one seed gives one run in
            // `diskd-bench sim`: tokio's unbiased choice draws from a randomness no seed
            // reaches. Timers fire only when due, the sockets come last and take turns, and
            // after a burst of datagrams every other ready branch goes first: no branch
            // starves another.
            tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => {
                    // Best effort: peers fall back to expiry (or the failure detector).
                    if let Err(e) = self.send(t, Body::Goodbye).await {
                        tracing::debug!("goodbye not sent: {e}");
                    }
                    if let Some(g) = g {
                        self.gossip_leave(g).await;
                    }
                    self.persist_all();
                    return Ok(());
                }
                _ = at(self.gossip.as_ref().and_then(|gs| gs.next_due())) => {
                    self.gossip_tick().await;
                }
                Some(r) = resolved.recv() => {
                    self.seed_resolved(r);
                }
                _ = tokio::time::sleep_until(next_announce) => {
                    self.announce(t).await?;
                    next_announce = self.clock.instant() + interval;
                }
                _ = ctx.local_changed().notified() => {
                    let now = self.clock.instant();
                    match self.announce.last {
                        // Already due at the window's end: this change goes with it (taking
                        // the notification now leaves none stored to fire a needless one).
                        _ if self.announce.due.is_some() => {}
                        Some(last) if now < last + DEBOUNCE => {
                            // Part of a burst: folded into one announce at the window's end.
                            self.announce.due = Some(last + DEBOUNCE);
                        }
                        _ => {
                            self.announce.last = Some(now);
                            self.changed_announce(t).await?;
                            next_announce = self.clock.instant() + interval;
                        }
                    }
                }
                _ = at(self.announce.due) => {
                    self.announce.due = None;
                    self.announce.last = Some(self.clock.instant());
                    self.changed_announce(t).await?;
                    next_announce = self.clock.instant() + interval;
                }
                _ = at(self.pacer.due_at()) => {
                    self.pacer.fired();
                    self.announce(t).await?;
                }
                Some(req) = requests.recv() => match req {
                    PeerRequest::Announce(reply) => match self.changed_announce(t).await {
                        Ok(n) => { let _ = reply.send(Ok(n)); }
                        Err(e) => {
                            let _ = reply.send(Err(send_error(&e)));
                            return Err(e);
                        }
                    },
                    PeerRequest::Ping(reply) => match self.send(t, Body::Ping).await {
                        Ok(()) => {
                            self.ping_members();
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(send_error(&e)));
                            return Err(e);
                        }
                    },
                    PeerRequest::Mount { target, uuid, read_only, unmount, reply } => {
                        let request = wire::MountRequest {
                            request_id: self.rng.gen(),
                            target,
                            uuid,
                            read_only,
                            unmount,
                        };
                        let now = self.clock.instant();
                        // Waiting first: if the send fails, the reopen path fails it with
                        // the reason instead of dropping the reply.
                        self.mount.rpc.start(request.clone(), reply, now);
                        let target = request.target.clone();
                        self.send_to_node(t, &target, Body::MountRequest(request)).await?;
                    }
                },
                _ = at(self.mount.rpc.next_due()) => {
                    // Resend our unanswered mount requests that are due; fail those past
                    // their deadline.
                    for request in self.mount.rpc.due(self.clock.instant()) {
                        let target = request.target.clone();
                        self.send_to_node(t, &target, Body::MountRequest(request)).await?;
                    }
                }
                Some((key, reply)) = self.mount.done_rx.recv() => {
                    tracing::info!(requester = %key.0, ok = reply.ok, "mount request answered: {}", reply.message);
                    self.mount.rpc.served(&key, &reply);
                    self.send_to_node(t, &key.0, Body::MountReply(reply)).await?;
                }
                _ = housekeeping.tick() => {
                    if self.housekeeping() {
                        // A generation never completed (a chunk was lost): ask again.
                        self.send(t, Body::Ping).await?;
                    }
                    self.gossip_housekeeping().await;
                    self.flush_pending_lost(false);
                    let now = self.clock.instant();
                    if self.flush.unflushed && now >= self.flush.last + FLUSH_EVERY {
                        self.flush.unflushed = false;
                        self.flush.dirty = true;
                    }
                    self.flush_if_dirty().await;
                }
                (path, r) = recv_any(t, g, &mut buf, &mut gbuf, gossip_first), if !just_received => {
                    just_received = true;
                    // The other socket goes first next time: a flood on one never starves
                    // the other.
                    gossip_first = path == Path::Multicast;
                    match (path, r) {
                        (Path::Multicast, r) => {
                            let (n, from) = r?;
                            self.receive(&buf[..n], from, Path::Multicast).await;
                            // Take the rest of the burst, then make it durable with one flush.
                            for _ in 0..BURST {
                                match t.try_recv(&mut buf) {
                                    Ok((n, from)) => self.receive(&buf[..n], from, Path::Multicast).await,
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                    Err(e) => return Err(e),
                                }
                            }
                            self.flush_if_dirty().await;
                        }
                        (Path::Gossip, Ok((n, from))) => {
                            self.receive(&gbuf[..n], from, Path::Gossip).await;
                            if let Some(g) = g {
                                for _ in 0..BURST {
                                    match g.try_recv(&mut gbuf) {
                                        Ok((n, from)) => self.receive(&gbuf[..n], from, Path::Gossip).await,
                                        Err(_) => break,
                                    }
                                }
                            }
                            self.flush_if_dirty().await;
                        }
                        (Path::Gossip, Err(e)) => {
                            // A bound UDP socket's errors are per datagram (an ICMP
                            // error surfacing): count and go on.
                            Stats::bump(&ctx.stats().send_errors);
                            tracing::debug!("gossip receive: {e}");
                            // Never a hot loop, whatever the error.
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
                // After a burst of datagrams, everything else that is ready goes first, then
                // the sockets again (a flood never holds up timers or requests).
                _ = std::future::ready(()), if just_received => {
                    just_received = false;
                }
            }
        }
    }
}
