//! Who may read over HTTP: the bearer token, its file, and the check every request passes.
//!
//! The token is read once at start from `http.token_file`, checked as a key file is (see
//! [`crate::secret`]): opened (a link is followed), then on the open file a regular
//! file of root or the daemon's user, mode 0600 or stricter, at most 4 KiB. A file that
//! fails, an empty one or one holding something that cannot travel in a header stops the
//! daemon (exit 2) with one line naming the path. Only the token's SHA-256 is kept, and a presented token is
//! compared by digest in constant time (`subtle`), so neither the time a comparison takes
//! nor the token's length tells an attacker anything.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{error, AppState};
use crate::telemetry::Stats;

/// The longest token file read (a token is a line; anything longer is a mistake).
pub const MAX_TOKEN_BYTES: usize = crate::secret::MAX_SECRET_BYTES;

/// The token every request must present as `Authorization: Bearer TOKEN`. Holds only the
/// token's digest, so a core dump or a `Debug` print never shows the token.
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Why the token file cannot be used; each names the key and the path, on one line.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be opened or read.
    #[error("http.token_file {}: {source}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A directory, a device, ...: not a file holding a token.
    #[error("http.token_file {}: not a regular file", path.display())]
    NotAFile {
        /// The token file.
        path: PathBuf,
    },
    /// Owned by someone else than root or the daemon's user, who could change it.
    #[error("http.token_file {}: owned by uid {uid}, who could change the token; it must belong to root or the daemon's user (uid {me}): chown it", path.display())]
    Owner {
        /// The token file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The daemon's user.
        me: u32,
    },
    /// Group or others have some access: the token would not be a secret.
    #[error("http.token_file {}: mode {mode:o} lets others read or change the token; chmod 600 it", path.display())]
    Mode {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Empty, or only white space.
    #[error("http.token_file {}: empty (write a token into it, e.g. `openssl rand -hex 32`)", path.display())]
    Empty {
        /// The token file.
        path: PathBuf,
    },
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("http.token_file {}: longer than {MAX_TOKEN_BYTES} bytes", path.display())]
    TooLong {
        /// The token file.
        path: PathBuf,
    },
    /// Holds spaces, control characters or non-ASCII: it could not be sent in a header.
    #[error("http.token_file {}: a token is one word of printable ASCII (no spaces or control characters)", path.display())]
    Invalid {
        /// The token file.
        path: PathBuf,
    },
}

impl Token {
    /// Read the token from its file: one word of printable ASCII (a trailing newline is
    /// fine), in a regular file of root or the daemon's user, mode 0600 or stricter, at
    /// most [`MAX_TOKEN_BYTES`]. Opened once and checked on the open
    /// file, so the file checked is the file read.
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        use crate::secret::Problem;
        let p = || path.to_path_buf();
        let bytes = crate::secret::read(path).map_err(|problem| match problem {
            Problem::Open(source) | Problem::Read(source) => TokenError::Read { path: p(), source },
            Problem::NotAFile => TokenError::NotAFile { path: p() },
            Problem::Owner { uid, me } => TokenError::Owner { path: p(), uid, me },
            Problem::Mode(mode) => TokenError::Mode { path: p(), mode },
            Problem::TooLarge(_) => TokenError::TooLong { path: p() },
        })?;
        match Token::from_bytes(&bytes) {
            Ok(t) => Ok(t),
            Err(TokenProblem::Empty) => Err(TokenError::Empty { path: p() }),
            Err(TokenProblem::Invalid) => Err(TokenError::Invalid { path: p() }),
        }
    }

    /// A token from the file's bytes, surrounding white space removed.
    fn from_bytes(bytes: &[u8]) -> Result<Token, TokenProblem> {
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenProblem::Invalid);
        }
        Ok(Token {
            digest: Sha256::digest(token).into(),
        })
    }

    /// Whether `presented` is the token. Digests are compared, in constant time, so the
    /// comparison takes as long whatever was sent and however long it is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// What is wrong with a token file's content (the caller adds the path).
#[derive(Debug, PartialEq, Eq)]
enum TokenProblem {
    Empty,
    Invalid,
}

/// The token of an `Authorization` header value of the `Bearer` scheme (RFC 6750: the
/// scheme in any case, then white space, then the token); `None` for any other value.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Whether a `Host` header names this machine's loopback: `localhost` or a loopback
/// address, with or without a port.
fn loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1] or [::1]:9180
        match rest.split_once(']') {
            Some((ip, tail)) if tail.is_empty() || tail.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::config::is_loopback)
}

/// How a request failed the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No `Authorization: Bearer` header at all.
    Missing,
    /// A bearer token that is not ours.
    Invalid,
}

/// The check every request passes when a token is configured: 401 without the right
/// `Authorization: Bearer TOKEN` (with `WWW-Authenticate: Bearer`, as RFC 6750 asks).
/// Without a token (a loopback listener) a request passes when it names a loopback host:
/// a web page elsewhere whose name an attacker points at 127.0.0.1 (DNS rebinding) makes
/// the browser send its own name as `Host`, and is refused (403), so no page but ours can
/// read the fleet through the visitor's browser.
pub(super) async fn require(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = st.token.as_deref() else {
        let host = req.headers().get(HOST).map(|h| h.as_bytes());
        if host.is_some_and(|h| !loopback_host(h)) {
            Stats::bump(&st.stats.unauthorized);
            return error(
                StatusCode::FORBIDDEN,
                "this listener answers only to a loopback Host (localhost, 127.0.0.1, [::1]); \
                 elsewhere configure http.token_file",
            );
        }
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .find_map(|v| bearer(v.as_bytes()));
    let refusal = match presented {
        Some(t) if token.matches(t) => return next.run(req).await,
        Some(_) => Refusal::Invalid,
        None => Refusal::Missing,
    };
    Stats::bump(&st.stats.unauthorized);
    let (message, challenge) = match refusal {
        Refusal::Missing => (
            "this listener needs Authorization: Bearer TOKEN (http.token_file)",
            "Bearer realm=\"diskd\"",
        ),
        Refusal::Invalid => (
            "the bearer token is not this listener's",
            "Bearer realm=\"diskd\", error=\"invalid_token\"",
        ),
    };
    let mut resp = error(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_loopback_host_reaches_a_listener_without_a_token() {
        for ok in [
            "localhost",
            "LOCALHOST:9180",
            "127.0.0.1",
            "127.0.0.1:9180",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:9180",
        ] {
            assert!(loopback_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9180",
            "localhost.evil.example",
            "198.18.0.1:9180",
            "[::1]x",
            "127.0.0.1:x",
            "",
            "0.0.0.0",
        ] {
            assert!(!loopback_host(bad.as_bytes()), "{bad}");
        }
        assert!(!loopback_host(b"\xff"));
    }

    fn token(text: &str) -> Token {
        Token::from_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn the_token_matches_itself_and_nothing_else() {
        let t = token("s3cret-Token_0123456789\n");
        assert!(t.matches(b"s3cret-Token_0123456789"));
        for wrong in [
            &b""[..],
            b"s3cret-Token_012345678",
            b"s3cret-Token_01234567890",
            b"S3cret-Token_0123456789",
            b"s3cret-Token_0123456789\n",
            b" s3cret-Token_0123456789",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "Token(..)");
    }

    #[test]
    fn a_token_is_one_printable_word() {
        assert_eq!(Token::from_bytes(b"").unwrap_err(), TokenProblem::Empty);
        assert_eq!(
            Token::from_bytes(b" \n\t\n").unwrap_err(),
            TokenProblem::Empty
        );
        for bad in [
            &b"two words"[..],
            b"tab\there",
            b"nul\0",
            "caf\u{e9}".as_bytes(),
            b"a\nb",
        ] {
            assert_eq!(
                Token::from_bytes(bad).unwrap_err(),
                TokenProblem::Invalid,
                "{bad:?}"
            );
        }
        assert!(token("  padded\r\n").matches(b"padded"));
    }

    #[test]
    fn bearer_takes_the_scheme_in_any_case_and_nothing_else() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER\tabc"), Some(&b"abc"[..]));
        for none in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            b"Bearerabc",
            b"abc",
        ] {
            assert_eq!(bearer(none), None, "{none:?}");
        }
    }

    #[test]
    fn the_file_must_be_private_non_empty_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", b"0123abcd\n", 0o600);
        assert!(Token::load(&good).unwrap().matches(b"0123abcd"));
        let ro = write("ro", b"0123abcd", 0o400);
        assert!(Token::load(&ro).is_ok());

        // A link is followed: the file it leads to is what is checked and read.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(Token::load(&link).unwrap().matches(b"0123abcd"));
        let cases: Vec<(PathBuf, &str)> = vec![
            (write("group", b"0123abcd", 0o640), "mode 640"),
            (write("world", b"0123abcd", 0o604), "mode 604"),
            (write("gw", b"0123abcd", 0o620), "mode 620"),
            (write("empty", b"\n", 0o600), "empty"),
            (write("words", b"two words\n", 0o600), "one word"),
            (
                write("long", &vec![b'a'; MAX_TOKEN_BYTES + 1], 0o600),
                "longer than",
            ),
            (dir.path().join("missing"), "No such file"),
            (dir.path().to_path_buf(), "not a regular file"),
        ];
        for (path, want) in cases {
            let e = Token::load(&path).unwrap_err().to_string();
            assert!(e.starts_with("http.token_file "), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(want), "{path:?}: {e:?}, expected {want:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    #[ignore = "needs root"]
    fn a_token_file_someone_else_owns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = crate::test_support::file_of_a_stranger(dir.path(), "theirs", b"0123abcd\n");
        let e = Token::load(&theirs).unwrap_err().to_string();
        assert!(e.starts_with("http.token_file "), "{e}");
        assert!(
            e.contains("owned by uid 4000000001") && e.contains("chown"),
            "{e}"
        );
    }
}
