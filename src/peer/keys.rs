//! The keyring: who may change what our daemons believe, and who may read our inventory.
//!
//! Each key file holds one 32-byte key as text: 64 hex digits or standard base64 (44
//! characters with padding); surrounding whitespace is ignored. `diskd keygen` writes base64.
//! The first key seals what we send; every key opens what we receive, so a fleet rotates
//! without a flag day (add the new key everywhere, make it first everywhere, remove the old).
//!
//! A sealed datagram is `SEALED_MAGIC`, a version byte, the 8-byte key id (the start of the
//! key's SHA-256, so receivers pick the key without trying them all), a 24-byte random nonce,
//! and the XChaCha20-Poly1305 ciphertext of the whole plaintext datagram. Magic, version and
//! key id are the associated data, so the header is authenticated too.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::wire::Reject;

/// First bytes of a sealed datagram.
pub const SEALED_MAGIC: &[u8; 4] = b"DSKS";
/// Sealed-envelope version.
pub const SEALED_VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 4 + 1 + KEY_ID_LEN;
/// Bytes sealing adds to a datagram (header, nonce, tag).
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + 16;

/// A key problem at start: one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("security.key_files: {}: {reason}", path.display())]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    fingerprint: String,
    cipher: XChaCha20Poly1305,
}

/// The loaded keys; empty means "no security configured".
#[derive(Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

/// Parse a key file's text: 64 hex digits or base64 of exactly 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty; expected 32 bytes as 64 hex digits or base64".into());
    }
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| format!("bad hex: {e}"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| "neither 64 hex digits nor base64".to_string())?
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("the key is {} bytes long; it must be 32", bytes.len()))
}

fn fingerprint_of(key: &[u8; 32]) -> ([u8; KEY_ID_LEN], String) {
    let digest = Sha256::digest(key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    (id, hex::encode(&digest[..KEY_ID_LEN]))
}

impl Keyring {
    /// Load every key file. Each is opened, then checked on the open file (see
    /// [`crate::secret`]; a link is followed and its target checked): not a regular file,
    /// owned by anyone but root
    /// or the daemon's user, readable or writable by group or others, over 4 KiB,
    /// unreadable, malformed or of the wrong length is an error naming the file.
    pub fn load(paths: &[PathBuf]) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for path in paths {
            let fail = |reason: String| KeyError {
                path: path.clone(),
                reason,
            };
            let bytes = crate::secret::read(path).map_err(|p| fail(p.to_string()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| fail("not text; expected 64 hex digits or base64".into()))?;
            let key = parse_key(&text).map_err(fail)?;
            keys.push(Key::new(&key));
        }
        Ok(Keyring { keys })
    }

    /// A keyring from raw keys (tests, benchmarks).
    pub fn from_keys(raw: &[[u8; 32]]) -> Keyring {
        Keyring {
            keys: raw.iter().map(Key::new).collect(),
        }
    }

    /// Whether any key is configured (then only sealed datagrams are accepted).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Fingerprint of the key that seals what we send.
    pub fn signing_fingerprint(&self) -> Option<&str> {
        self.keys.first().map(|k| k.fingerprint.as_str())
    }

    /// Fingerprints of every key, signing key first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.fingerprint.clone()).collect()
    }

    /// Seal a plaintext datagram with the first key; unchanged without keys.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        let Some(key) = self.keys.first() else {
            return plain;
        };
        let mut header = Vec::with_capacity(OVERHEAD + plain.len());
        header.extend_from_slice(SEALED_MAGIC);
        header.push(SEALED_VERSION);
        header.extend_from_slice(&key.id);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce only fails for absurd lengths (> 256 GiB).
        let Ok(ct) = key.cipher.encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &header,
            },
        ) else {
            return Vec::new();
        };
        let mut out = header;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Open a received datagram. With keys: only sealed datagrams under a known key open;
    /// returns the plaintext and the key's fingerprint. Without keys: plaintext passes, sealed
    /// datagrams are rejected (we cannot read them).
    pub fn open<'a>(&'a self, bytes: &[u8]) -> Result<(Vec<u8>, Option<&'a str>), Reject> {
        let sealed = bytes.starts_with(SEALED_MAGIC);
        if !self.enabled() {
            return if sealed {
                Err(Reject::SealedNoKey)
            } else {
                Ok((bytes.to_vec(), None))
            };
        }
        if !sealed {
            return Err(Reject::Plaintext);
        }
        if bytes.len() < HEADER_LEN + NONCE_LEN + 16 || bytes[4] != SEALED_VERSION {
            return Err(Reject::BadSeal);
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let id = &header[5..];
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(Reject::UnknownKey);
        };
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: header,
                },
            )
            .map_err(|_| Reject::BadSeal)?;
        Ok((plain, Some(key.fingerprint.as_str())))
    }
}

impl Key {
    fn new(raw: &[u8; 32]) -> Key {
        let (id, fingerprint) = fingerprint_of(raw);
        Key {
            id,
            fingerprint,
            cipher: XChaCha20Poly1305::new(raw.into()),
        }
    }
}

/// A fresh random key, as the base64 text `keygen` writes.
pub fn generate() -> String {
    let key = XChaCha20Poly1305::generate_key(&mut OsRng);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Write a fresh key to `path` with mode 0600; never overwrites an existing file.
pub fn write_new_key(path: &Path) -> std::io::Result<String> {
    let text = generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")?;
    f.sync_all()?;
    let key = parse_key(&text).map_err(std::io::Error::other)?;
    Ok(fingerprint_of(&key).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hex_and_base64_parse_to_the_same_key() {
        let raw = [7u8; 32];
        let hex_text = hex::encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_key(&format!("  {hex_text}\n")).unwrap(), raw);
        assert_eq!(parse_key(&b64).unwrap(), raw);
        assert!(parse_key("").is_err());
        assert!(parse_key("abcd").unwrap_err().contains("base64") || parse_key("abcd").is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(parse_key(&short).unwrap_err().contains("16 bytes"));
    }

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let sender_old = Keyring::from_keys(&[old]);
        let sender_new = Keyring::from_keys(&[new, old]);
        let receiver_mid = Keyring::from_keys(&[new, old]);
        let receiver_done = Keyring::from_keys(&[new]);
        let msg = b"DSKD\x01hello".to_vec();
        let a = sender_old.seal(msg.clone());
        let b = sender_new.seal(msg.clone());
        assert_eq!(receiver_mid.open(&a).unwrap().0, msg);
        assert_eq!(receiver_mid.open(&b).unwrap().0, msg);
        assert_eq!(
            receiver_mid.open(&b).unwrap().1,
            sender_new.signing_fingerprint()
        );
        assert_eq!(receiver_done.open(&a).unwrap_err(), Reject::UnknownKey);
        assert_eq!(receiver_done.open(&b).unwrap().0, msg);
    }

    #[test]
    fn tampering_plaintext_and_no_key_are_rejected() {
        let ring = Keyring::from_keys(&[[9u8; 32]]);
        let sealed = ring.seal(b"DSKD\x01payload".to_vec());
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x40;
            assert!(ring.open(&t).is_err(), "flipping byte {i} went unnoticed");
        }
        assert_eq!(ring.open(b"DSKD\x01plain").unwrap_err(), Reject::Plaintext);
        assert_eq!(ring.open(&sealed[..20]).unwrap_err(), Reject::BadSeal);
        let none = Keyring::default();
        assert_eq!(none.open(&sealed).unwrap_err(), Reject::SealedNoKey);
        assert_eq!(none.open(b"DSKD\x01plain").unwrap().0, b"DSKD\x01plain");
        // Two seals of the same message differ (random nonces).
        assert_ne!(ring.seal(b"x".to_vec()), ring.seal(b"x".to_vec()));
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.key");
        let fp = write_new_key(&good).unwrap();
        assert_eq!(
            std::fs::metadata(&good).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let ring = Keyring::load(std::slice::from_ref(&good)).unwrap();
        assert_eq!(ring.signing_fingerprint(), Some(fp.as_str()));
        assert!(write_new_key(&good).is_err(), "overwrote an existing key");

        let open = dir.path().join("open.key");
        std::fs::copy(&good, &open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load(&[open]).err().unwrap().to_string();
        assert!(e.contains("open.key") && e.contains("644"), "{e}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Keyring::load(&[bad]).is_err());

        // Each refusal of the open file names the key, the file and what to do.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(
            Keyring::load(std::slice::from_ref(&link)).is_ok(),
            "a link to a good key"
        );
        let big = dir.path().join("big.key");
        std::fs::write(&big, format!("{}\n", " ".repeat(5000))).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, want) in [
            (big, "more than 4096"),
            (fifo, "not a regular file"),
            (dir.path().to_path_buf(), "not a regular file"),
            (dir.path().join("missing"), "No such file"),
        ] {
            let e = Keyring::load(std::slice::from_ref(&path))
                .err()
                .unwrap()
                .to_string();
            assert!(e.starts_with("security.key_files: "), "{e}");
            assert!(e.contains(&*path.to_string_lossy()), "{e}");
            assert!(e.contains(want), "{path:?}: {e}, expected {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn a_key_file_someone_else_owns_is_refused() {
        crate::test_support::needs_root("chown to another uid");
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs.key");
        write_new_key(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4_000_000_001), None).unwrap();
        let e = Keyring::load(std::slice::from_ref(&theirs))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("theirs.key") && e.contains("owned by uid 4000000001"),
            "{e}"
        );
        assert!(e.contains("chown"), "{e}");
    }
}
