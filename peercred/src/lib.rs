//! The supplementary groups of the process at the other end of a unix socket.
//!
//! Linux tells them (`getsockopt(SO_PEERGROUPS)`, since 4.13) as they were when that
//! process connected; neither `nix` nor `rustix` wraps the option yet. This crate holds
//! that one FFI call, so `diskd` and `diskd-watchers` stay `#![forbid(unsafe_code)]`.
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The most groups a Linux process can have (`NGROUPS_MAX`).
pub const NGROUPS_MAX: usize = 65_536;

/// The supplementary group ids of the process that connected `fd` (a connected unix
/// stream socket), as the kernel recorded them at connect time. Fails with the kernel's
/// error: `ENOPROTOOPT` before Linux 4.13, `ENOTCONN` on an unconnected socket, `ENODATA`
/// when the peer's credentials are unknown.
#[cfg(target_os = "linux")]
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    // Most processes have a few groups; on ERANGE the kernel says how many it holds.
    let mut want: usize = 32;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; want];
        let mut len = (want * GID) as libc::socklen_t;
        // SAFETY: `groups` is `len` bytes of initialised, writable memory that lives
        // across the call; the kernel writes at most `len` bytes there and stores in
        // `len` how many it wrote, or (ERANGE) how many it needs. `fd` is open: it is
        // borrowed for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / GID;
        if rc == 0 {
            groups.truncate(n.min(want));
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > want && n <= NGROUPS_MAX {
            want = n;
            continue;
        }
        return Err(e);
    }
}

/// Not Linux: the kernel has no such option.
#[cfg(not(target_os = "linux"))]
pub fn peer_groups(_fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn mine() -> Vec<u32> {
        // SAFETY (test only): getgroups(0, NULL) returns the count; the second call fills
        // a buffer of that many gids.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert!(n >= 0);
        let mut v = vec![0 as libc::gid_t; n as usize];
        let m = unsafe { libc::getgroups(n, v.as_mut_ptr()) };
        assert_eq!(m, n);
        v.sort_unstable();
        v
    }

    #[test]
    fn a_pair_knows_our_own_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        got.sort_unstable();
        assert_eq!(got, mine());
    }

    #[test]
    fn an_accepted_connection_knows_the_connecting_process_groups() {
        let dir = std::env::temp_dir().join(format!("peercred-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let l = UnixListener::bind(&dir).unwrap();
        let _c = UnixStream::connect(&dir).unwrap();
        let (s, _) = l.accept().unwrap();
        let _ = std::fs::remove_file(&dir);
        let mut got = peer_groups(s.as_fd()).unwrap();
        got.sort_unstable();
        assert_eq!(got, mine());
    }

    #[test]
    fn a_socket_without_a_unix_peer_is_an_error_not_a_panic() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(peer_groups(udp.as_fd()).is_err());
    }
}
