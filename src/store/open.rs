//! Opening a store: sled, the schema check and migration, and every host value loaded
//! into memory with its index; or a store in memory only.

use super::*;

/// What a store starts from: read from sled at open, or empty.
pub(super) struct Loaded {
    pub(super) mem: Memory,
    pub(super) peers: BTreeMap<String, PeerRecord>,
    pub(super) local_seen: u64,
    pub(super) chunks: HashMap<String, u32>,
    /// Read from the warm-start image (see `warm`), not from sled.
    pub(super) from_image: bool,
}

/// How long `Store::open` waits for a lock that a store closed a moment ago still holds.
pub(super) const OPEN_LOCK_WAIT: Duration = Duration::from_millis(500);

/// One host's value from its chunks, with its index terms; `None` when it is unreadable
/// (skipped, as at every open).
pub(super) fn decode_host(id: String, group: &[sled::IVec]) -> Option<(HostState, Vec<u64>)> {
    let bytes = join_chunks(group)?;
    let view = HostView::decode(unframed(&bytes))?;
    let (terms, len) = (view.terms(), view.entries.len());
    Some((HostState::new(Arc::from(id.as_str()), bytes, len), terms))
}

/// Read every host value from sled and build the in-memory part from them. Restart time is
/// mostly this (160,000 records: about 45 ms reading sled, 55 ms decoding and collecting
/// index terms, 20 ms building the index), so the first two overlap: this thread walks
/// sled while a second one decodes what it hands over, in key order (the order hosts are
/// listed in). The values stay encoded (the index
/// is built from borrowed views), and the index is sized once, when every host's terms are
/// known.
pub(super) fn load_hosts(
    hosts: &sled::Tree,
) -> Result<(Memory, HashMap<String, u32>), sled::Error> {
    /// Hosts handed over at once: enough to keep the decoder busy, little held at a time.
    const QUEUE: usize = 256;
    let mut chunks: HashMap<String, u32> = HashMap::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<sled::IVec>)>(QUEUE);
    let loaded = std::thread::scope(|scope| {
        let decoder = std::thread::Builder::new()
            .name("store-load".into())
            .spawn_scoped(scope, move || {
                let mut loaded = Vec::new();
                for (id, group) in rx {
                    loaded.extend(decode_host(id, &group));
                }
                loaded
            });
        // Without a second thread (the system refused one) this thread decodes as it
        // walks: slower, the same result.
        let mut inline = Vec::new();
        let mut hand_over = |id: String, group: Vec<sled::IVec>| match &decoder {
            // The decoder only stops when this side hangs up, or panics (see below).
            Ok(_) => {
                let _ = tx.send((id, group));
            }
            Err(_) => inline.extend(decode_host(id, &group)),
        };
        let mut group: Vec<sled::IVec> = Vec::new();
        let mut group_id: Option<String> = None;
        let walk: Result<(), sled::Error> = (|| {
            for item in hosts.iter() {
                let (k, v) = item?;
                let Some((id, i)) = parse_chunk_key(&k) else {
                    continue;
                };
                if group_id.as_deref() != Some(id) {
                    if let Some(prev) = group_id.take() {
                        hand_over(prev, std::mem::take(&mut group));
                    }
                    group_id = Some(id.to_string());
                }
                let n = chunks.entry(id.to_string()).or_default();
                *n = (*n).max(i + 1);
                // Chunks must be numbered 0, 1, ... without a gap to make a value.
                if i as usize == group.len() {
                    group.push(v);
                }
            }
            if let Some(prev) = group_id.take() {
                hand_over(prev, group);
            }
            Ok(())
        })();
        drop(tx);
        let loaded = match decoder {
            // A decoder that panicked is a bug: it stops the start loudly, as decoding on
            // this thread would have, rather than serve a store that looks empty.
            Ok(d) => d.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => inline,
        };
        walk.map(|()| loaded)
    })?;
    let mut mem = Memory::default();
    mem.index
        .reserve(loaded.iter().map(|(_, terms)| terms.len()).sum());
    for (state, terms) in loaded {
        mem.publish(Arc::new(state), &[], &terms);
    }
    Ok((mem, chunks))
}

pub(super) fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
        }
        _ => false,
    }
}

impl Store {
    /// Open (or create) the store in `path`, check its schema (converting a store of
    /// schema 2 to 5), load or make the node id, and load every host into memory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // A store just closed in this process may hold sled's lock for a moment longer
        // (its background threads finish first): a short wait, then `Locked` stands.
        let deadline = std::time::Instant::now() + OPEN_LOCK_WAIT;
        loop {
            match Store::open_until(path, migrate::Until::All) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    pub(super) fn open_until(path: &Path, until: migrate::Until) -> Result<Store, StoreError> {
        let open_err = |source: sled::Error| {
            if is_lock_error(&source) {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        sniff::check_log_readable(path)?;
        // A compaction that died before its swap left a full copy beside the store.
        let leftover = compact::staging(path);
        if leftover.is_dir() {
            if let Err(e) = std::fs::remove_dir_all(&leftover) {
                tracing::warn!(
                    "cannot remove {} (left by a compaction): {e}",
                    leftover.display()
                );
            }
        }
        // The warm-start image is read and built into memory on a second thread while sled
        // opens; its stamp is taken first, as sled's open may write to the log.
        let started = std::time::Instant::now();
        let (dir, stamp) = (path.to_path_buf(), warm::log_stamp(path));
        let reader = std::thread::Builder::new()
            .name("store-image".into())
            .spawn(move || warm::prepare(&dir, stamp));
        let db = health::config(path).open();
        let image = match reader {
            Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => None,
        };
        let db = db.map_err(open_err)?;
        let meta = db.open_tree(META).map_err(open_err)?;
        let has_tree = |name: &str| {
            db.tree_names()
                .iter()
                .any(|n| n.as_ref() == name.as_bytes())
        };

        let mut current = false;
        match meta.get(KEY_SCHEMA).map_err(open_err)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {
                migrate::drop_v2_leftovers(&db, &meta).map_err(open_err)?;
                current = true;
            }
            Some(v) if [&b"3"[..], b"4", b"5"].contains(&v.as_ref()) => {
                // Schemas 3, 4 and 5 converted schema 2 the same way and may have left its
                // trees.
                migrate::drop_v2_leftovers(&db, &meta).map_err(open_err)?;
                let hosts = db.open_tree(HOSTS).map_err(open_err)?;
                migrate::hosts_in_place(&db, &meta, &hosts, KEY_SCHEMA, until).map_err(open_err)?;
            }
            Some(v) if v.as_ref() == b"2" => {
                migrate::from_v2(&db, &meta, HOSTS, KEY_SCHEMA, until).map_err(open_err)?;
            }
            Some(v) => {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: SCHEMA_VERSION,
                });
            }
            None => {
                let mut data = false;
                for name in [HOSTS, PEERS, migrate::V2_SIGHTINGS] {
                    if has_tree(name) {
                        data |= !db.open_tree(name).map_err(open_err)?.is_empty();
                    }
                }
                if data {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found: "none (data without a version)".into(),
                        expected: SCHEMA_VERSION,
                    });
                }
                meta.insert(KEY_SCHEMA, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(open_err)?;
            }
        }
        // Whatever the image is, its token goes before anything else is written, and the
        // file with it.
        let token = match meta.contains_key(warm::KEY_TOKEN).map_err(open_err)? {
            true => meta.remove(warm::KEY_TOKEN).map_err(open_err)?,
            false => None,
        };
        warm::remove_image(path);
        let hosts = db.open_tree(HOSTS).map_err(open_err)?;
        let peers_tree = db.open_tree(PEERS).map_err(open_err)?;
        let attaches = db.open_tree(ATTACHES).map_err(open_err)?;
        let node_id = match meta.get(KEY_NODE_ID).map_err(open_err)? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = new_node_id();
                meta.insert(KEY_NODE_ID, id.as_bytes()).map_err(open_err)?;
                id
            }
        };
        let local_seen = meta
            .get(KEY_LOCAL_SEEN)
            .map_err(open_err)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(NONE, u64::from_be_bytes);

        // Every host into memory, and the index with it: from the warm-start image a clean
        // shutdown left, else from sled (`load_hosts`).
        let warm = image
            .filter(|_| current)
            .and_then(|w| w.accept(token.as_ref()));
        let loaded = match warm {
            Some(loaded) => Loaded {
                local_seen,
                ..loaded
            },
            None => {
                let (mem, chunks) = load_hosts(&hosts).map_err(open_err)?;
                let mut peers = BTreeMap::new();
                for item in peers_tree.iter() {
                    let (k, v) = item.map_err(open_err)?;
                    if let Some(p) = decode::<PeerRecord>(&v) {
                        peers.insert(String::from_utf8_lossy(&k).into_owned(), p);
                    }
                }
                Loaded {
                    mem,
                    peers,
                    local_seen,
                    chunks,
                    from_image: false,
                }
            }
        };
        tracing::info!(
            "store: {} hosts loaded from {}, opened in {:.1?}",
            loaded.mem.hosts.len(),
            if loaded.from_image {
                "the warm-start image"
            } else {
                "the log"
            },
            started.elapsed()
        );
        db.flush().map_err(open_err)?;
        let sled = Sled {
            db,
            meta,
            hosts,
            peers_tree,
            attaches,
        };
        Ok(Store::assemble(
            Some(sled),
            node_id,
            path.to_path_buf(),
            loaded,
        ))
    }

    /// A store that lives in memory only, under the node id given: what readers see and
    /// writers change is the same as with [`Store::open`], but nothing reaches a disk and
    /// nothing survives the process. For `diskd-bench sim`, which runs thousands of peer
    /// layers in one process (a sled each would be thousands of files, caches and
    /// threads), and keeps a crashed node's store to restart it from.
    pub fn in_memory(node_id: &str) -> Store {
        let empty = Loaded {
            mem: Memory::default(),
            peers: BTreeMap::new(),
            local_seen: NONE,
            chunks: HashMap::new(),
            from_image: false,
        };
        Store::assemble(None, node_id.to_string(), PathBuf::from("(memory)"), empty)
    }

    /// The one place a store is put together: on disk (`sled` given, from `open`) or in
    /// memory only (`None`, which also turns compaction off).
    pub(super) fn assemble(
        sled: Option<Sled>,
        node_id: String,
        path: PathBuf,
        loaded: Loaded,
    ) -> Store {
        let volatile = sled.is_none();
        Store {
            inner: Arc::new(Inner {
                sled: RwLock::new(sled.map(Arc::new)),
                durability: Mutex::new(Durability::default()),
                trouble: tokio::sync::Notify::new(),
                node_id,
                path,
                mem: RwLock::new(loaded.mem),
                peers: RwLock::new(loaded.peers),
                local_seen: AtomicU64::new(loaded.local_seen),
                chunks: Mutex::new(loaded.chunks),
                local_writer: Mutex::new(()),
                peer_writer: Mutex::new(()),
                maintenance: std::sync::atomic::AtomicBool::new(false),
                no_exchange: std::sync::atomic::AtomicBool::new(volatile),
                host_writes: AtomicU64::new(0),
                inline_flush: std::sync::atomic::AtomicBool::new(false),
                from_image: loaded.from_image,
                volatile,
            }),
        }
    }

    /// Open like [`Store::open`], as one of many stores in one process (`diskd-bench
    /// gossip` runs a whole fleet in one): [`Store::flush`] then waits for sled on the
    /// calling thread instead of on sled's thread pool. That pool is process-wide and
    /// grows only when more than 7 jobs are queued, while `flush_async` holds a pool
    /// thread until the log write it queued on the same pool is done; with dozens of
    /// stores flushing at once, every pool thread waits for a write queued behind it and
    /// nothing moves again (a 30-node simulation hung so). A daemon has one store and
    /// flushes it from one task at a time, so [`Store::open`] keeps `flush_async`.
    pub fn open_sharing_process(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open(path)?;
        store.inner.inline_flush.store(true, Ordering::Relaxed);
        Ok(store)
    }
}
