//! Who may run what on the control socket.
//!
//! The socket's file mode decides who may connect at all (0600: the daemon's user; 0660:
//! also `socket_group`). Every session then learns its caller from the kernel
//! (`SO_PEERCRED`: the uid and gid of the process that connected, which it cannot forge)
//! and the commands that change something ([`Request::needs_admin`]) are refused unless
//! the caller is root, the daemon's own user, or a member of `control.admin_group`. The
//! group membership is looked up only when such a command is asked for, off the runtime
//! (the group database may be LDAP).
//!
//! [`Request::needs_admin`]: crate::protocol::Request::needs_admin

use tokio::net::UnixStream;

use crate::config::{Access, GroupRef};
use crate::protocol::frame::{Reply, Status};
use crate::protocol::Request;

/// The process at the other end of a session, as the kernel saw it connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    uid: Option<u32>,
    gid: Option<u32>,
}

impl Caller {
    /// The caller of `stream`; unknown (allowed only what anyone connected may do) when
    /// the kernel cannot tell.
    pub fn of(stream: &UnixStream) -> Caller {
        match stream.peer_cred() {
            Ok(c) => Caller {
                uid: Some(c.uid()),
                gid: Some(c.gid()),
            },
            Err(e) => {
                tracing::debug!("no peer credentials: {e}");
                Caller {
                    uid: None,
                    gid: None,
                }
            }
        }
    }

    /// A caller with these ids (tests).
    pub fn new(uid: u32, gid: u32) -> Caller {
        Caller {
            uid: Some(uid),
            gid: Some(gid),
        }
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

    /// Root, the daemon's own user, or a member of the admin group.
    async fn is_admin(&self, access: &Access) -> bool {
        let Some(uid) = self.uid else {
            return false;
        };
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return true;
        }
        let Some(group) = access.admin_group.clone() else {
            return false;
        };
        if self.gid == Some(group.gid) {
            return true;
        }
        tokio::task::spawn_blocking(move || member(uid, &group))
            .await
            .unwrap_or(false)
    }
}

/// Whether the user `uid` belongs to `group` by the group database (its supplementary
/// groups; the primary one is the caller's gid, checked before).
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
        for caller in [Caller::new(0, 0), Caller::new(me, 0)] {
            assert_eq!(caller.check(&Request::Refresh, &access(None)).await, None);
        }
        let c = Caller::new(stranger, 4_000_000_001);
        assert_eq!(c.check(&list, &access(None)).await, None);
        let refused = c.check(&Request::Ping, &access(None)).await.unwrap();
        assert_eq!(refused.status.exit_code(), 1);
        assert!(
            matches!(&refused.status, Status::Refused(t) if t.starts_with("ping needs root")),
            "{refused:?}"
        );
        // Its primary group is the admin group: allowed.
        let admin = Caller::new(stranger, 4_000_000_002);
        assert_eq!(
            admin
                .check(&Request::Debug, &access(Some(4_000_000_002)))
                .await,
            None
        );
        let refused = c
            .check(&Request::Debug, &access(Some(4_000_000_002)))
            .await
            .unwrap();
        assert!(
            matches!(&refused.status, Status::Refused(t) if t.contains("\"ops\" (control.admin_group)")),
            "{refused:?}"
        );
        // Unknown credentials: reading only.
        let unknown = Caller {
            uid: None,
            gid: None,
        };
        assert_eq!(unknown.check(&list, &access(None)).await, None);
        assert!(unknown
            .check(&Request::Announce, &access(None))
            .await
            .is_some());
    }
}
