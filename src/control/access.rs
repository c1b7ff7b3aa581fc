//! Who may run what on the control socket.
//!
//! The socket's file mode decides who may connect at all (0600: the daemon's user; 0660:
//! also `socket_group`). Every session then learns its caller from the kernel, which the
//! caller cannot forge: `SO_PEERCRED` gives the uid and primary gid of the process that
//! connected, `SO_PEERGROUPS` (Linux 4.13) its supplementary groups. The commands that
//! change something ([`Request::needs_admin`]) are refused unless the caller is root, the
//! daemon's own user, or carries `control.admin_group` (primary or supplementary).
//!
//! The groups are the connecting *process's*, not what the group database says of its
//! user: a process that dropped the admin group (`setpriv --clear-groups`, a sandboxed
//! service) is not an admin, and one that was given it is, as with file permissions. Only
//! when the kernel will not tell (older kernels) is the group database asked, off the
//! runtime (it may be LDAP), when such a command is asked for.
//!
//! [`Request::needs_admin`]: crate::protocol::Request::needs_admin

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::config::{Access, GroupRef};
use crate::protocol::frame::{Reply, Status};
use crate::protocol::Request;

/// Whether a caller is an admin, as far as the kernel told at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admin {
    /// Root, the daemon's user, or the admin group among the process's groups.
    Yes,
    /// None of those (or the kernel did not say who connected).
    No,
    /// The kernel would not list the process's supplementary groups: ask the group
    /// database when a command needs an admin.
    AskDatabase,
}

/// The process at the other end of a session, as the kernel saw it connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    uid: Option<u32>,
    gid: Option<u32>,
    admin: Admin,
}

impl Caller {
    /// The caller of `stream`, with its admin rights decided from the kernel's word now
    /// (two `getsockopt`s, no lookup: the accept loop calls this). Unknown credentials
    /// allow only what anyone connected may do.
    pub fn of(stream: &tokio::net::UnixStream, access: &Access) -> Caller {
        let (uid, gid) = match stream.peer_cred() {
            Ok(c) => (Some(c.uid()), Some(c.gid())),
            Err(e) => {
                tracing::debug!("no peer credentials: {e}");
                (None, None)
            }
        };
        Caller::decide(uid, gid, || peer_groups(stream.as_fd()), access)
    }

    /// A caller from its ids and a way to learn its supplementary groups (asked only when
    /// they matter: not for root, nor without an admin group).
    fn decide(
        uid: Option<u32>,
        gid: Option<u32>,
        groups: impl FnOnce() -> io::Result<Vec<u32>>,
        access: &Access,
    ) -> Caller {
        let admin = match (uid, &access.admin_group) {
            (None, _) => Admin::No,
            (Some(u), _) if u == 0 || u == nix::unistd::geteuid().as_raw() => Admin::Yes,
            (Some(_), None) => Admin::No,
            (Some(_), Some(g)) if gid == Some(g.gid) => Admin::Yes,
            (Some(u), Some(g)) => match groups() {
                Ok(list) if list.contains(&g.gid) => Admin::Yes,
                Ok(_) => Admin::No,
                Err(e) => {
                    tracing::debug!(
                        uid = u,
                        "the kernel does not tell the caller's groups (SO_PEERGROUPS: {e}); \
                         asking the group database when it needs admin rights"
                    );
                    Admin::AskDatabase
                }
            },
        };
        Caller { uid, gid, admin }
    }

    /// A caller with these ids and supplementary groups (tests).
    pub fn new(uid: u32, gid: u32, groups: &[u32], access: &Access) -> Caller {
        Caller::decide(Some(uid), Some(gid), || Ok(groups.to_vec()), access)
    }

    /// The caller's uid; `None` when the kernel did not say.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// Whether the caller is known, from the kernel alone, to be root, the daemon's user
    /// or an admin: such callers are not held to the per-user session share and may use
    /// the sessions kept in reserve (see `control::sessions`).
    pub fn privileged(&self) -> bool {
        self.admin == Admin::Yes
    }

    /// Whether the caller may run `request`; `None` when yes, else the refusal to send.
    pub async fn check(&self, request: &Request, access: &Access) -> Option<Reply> {
        if !request.needs_admin() || self.is_admin(access).await {
            return None;
        }
        let who = match &access.admin_group {
            Some(g) => format!(
                "root or membership in group {:?} (control.admin_group)",
                g.name
            ),
            None => "root or the daemon's user (control.admin_group is not set)".to_string(),
        };
        Some(Reply::status(Status::Refused(format!(
            "{} needs {who}",
            request.name()
        ))))
    }

    /// Root, the daemon's own user, or a process carrying the admin group.
    async fn is_admin(&self, access: &Access) -> bool {
        match (self.admin, self.uid, access.admin_group.clone()) {
            (Admin::Yes, _, _) => true,
            (Admin::AskDatabase, Some(uid), Some(group)) => {
                tokio::task::spawn_blocking(move || member(uid, &group))
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        }
    }
}

/// The supplementary groups of the process that connected `fd` (`SO_PEERGROUPS`, Linux
/// 4.13): the groups it had when it connected, whatever the group database says.
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    diskd_peercred::peer_groups(fd)
}

/// Whether the user `uid` belongs to `group` by the group database: only asked when the
/// kernel would not list the caller's own groups (see [`peer_groups`]).
fn member(uid: u32, group: &GroupRef) -> bool {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid)
        .map(|groups| groups.contains(&Gid::from_raw(group.gid)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::commands::List;

    fn access(admin: Option<u32>) -> Access {
        Access {
            socket_group: None,
            admin_group: admin.map(|gid| GroupRef {
                name: "ops".into(),
                gid,
            }),
        }
    }

    #[tokio::test]
    async fn readers_read_and_only_admins_change_things() {
        let me = nix::unistd::geteuid().as_raw();
        // A uid no account has: neither root nor whoever runs the tests.
        let stranger = 4_000_000_001;
        assert_ne!(me, stranger);
        let list = Request::List(List::default());
        let none = access(None);
        for caller in [
            Caller::new(0, 0, &[], &none),
            Caller::new(me, 0, &[], &none),
        ] {
            assert!(caller.privileged());
            assert_eq!(caller.check(&Request::Refresh, &none).await, None);
        }
        let c = Caller::new(stranger, 4_000_000_001, &[], &none);
        assert!(!c.privileged());
        assert_eq!(c.check(&list, &none).await, None);
        let refused = c.check(&Request::Ping, &none).await.unwrap();
        assert_eq!(refused.status.exit_code(), 1);
        assert!(
            matches!(&refused.status, Status::Refused(t) if t.starts_with("ping needs root")),
            "{refused:?}"
        );
        let ops = access(Some(4_000_000_002));
        // Its primary group is the admin group: allowed.
        let admin = Caller::new(stranger, 4_000_000_002, &[], &ops);
        assert!(admin.privileged());
        assert_eq!(admin.check(&Request::Debug, &ops).await, None);
        // The admin group among the process's supplementary groups: allowed.
        let admin = Caller::new(stranger, 4_000_000_001, &[7, 4_000_000_002], &ops);
        assert!(admin.privileged());
        assert_eq!(admin.check(&Request::Debug, &ops).await, None);
        let c = Caller::new(stranger, 4_000_000_001, &[7, 8], &ops);
        assert!(!c.privileged());
        let refused = c.check(&Request::Debug, &ops).await.unwrap();
        assert!(
            matches!(&refused.status, Status::Refused(t) if t.contains("\"ops\" (control.admin_group)")),
            "{refused:?}"
        );
        // Unknown credentials: reading only.
        let unknown = Caller::decide(None, None, || Ok(vec![4_000_000_002]), &ops);
        assert!(!unknown.privileged());
        assert_eq!(unknown.check(&list, &ops).await, None);
        assert!(unknown.check(&Request::Announce, &ops).await.is_some());
    }

    #[tokio::test]
    async fn without_the_kernels_word_the_group_database_decides_and_no_reserve_is_given() {
        let ops = access(Some(4_000_000_002));
        // Nobody has this uid: the group database knows no such user, so it is no admin.
        let c = Caller::decide(
            Some(4_000_000_001),
            Some(4_000_000_001),
            || Err(io::Error::from_raw_os_error(nix::libc::ENOPROTOOPT)),
            &ops,
        );
        assert_eq!(c.admin, Admin::AskDatabase);
        assert!(!c.privileged());
        assert!(c.check(&Request::Refresh, &ops).await.is_some());
        // Root needs no groups: they are not even asked for.
        let root = Caller::decide(Some(0), Some(0), || panic!("asked for root's groups"), &ops);
        assert!(root.privileged());
    }

    #[tokio::test]
    async fn the_kernel_lists_a_connected_process_groups() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let mut want = mine;
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
