//! What a membership change costs and says: one event per change, stored once, with the delta
//! (added, removed, by) and the conversation after it, reaching every member concerned, live
//! and by sync, each under its own cursor.

mod common;

use common::*;
use missive_proto::v1::{self, client_frame::Request, event};

const MEMBERS: usize = 40;
const TOGGLES: usize = 10;

/// The database's logical size in bytes (its pages, those still in the WAL included), as a
/// reader of the file sees it.
fn database_bytes(server: &TestServer) -> i64 {
    let db = rusqlite::Connection::open_with_flags(server.dir.path().join("missive.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let pages: i64 = db.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    let size: i64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    pages * size
}

fn name(i: usize) -> String {
    // Long names (64 bytes, the most allowed), as in the report.
    format!("{i:02}{}", "m".repeat(missive_proto::MAX_USERNAME_LEN - 2))
}

/// An owner toggling one member of a 40-member group with long names: each change grows the
/// database by a few copies of the member list at most. Before, every change wrote the whole
/// member list into every member's inbox (40 copies, about 100 KiB per change here; 4.4 MB in a
/// 256-member group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_is_stored_once_not_once_per_member() {
    let names: Vec<String> = (0..MEMBERS).map(name).collect();
    let server = TestServer::start().await;
    let url = server.url();
    for n in &names {
        Client::register(&url, n).await;
    }
    let mut owner = Client::login(&url, &names[0], "phone").await;
    let group = expect_conversation(
        owner.request(Request::CreateGroup(v1::CreateGroup { title: "big".into(), members: names[1..].to_vec() })).await,
    );
    assert_eq!(group.members.len(), MEMBERS);
    let mut watcher = Client::login_live(&url, &names[1], "phone").await;
    let toggled = names[MEMBERS - 1].clone();

    let before = database_bytes(&server);
    for _ in 0..TOGGLES {
        for request in [
            Request::RemoveMembers(v1::RemoveMembers { conversation_id: group.id, members: vec![toggled.clone()] }),
            Request::AddMembers(v1::AddMembers { conversation_id: group.id, members: vec![toggled.clone()] }),
        ] {
            expect_conversation(owner.request(request).await);
        }
    }
    let grown = database_bytes(&server) - before;
    let member_list = (MEMBERS * missive_proto::MAX_USERNAME_LEN) as i64;
    let per_change = grown / (2 * TOGGLES) as i64;
    eprintln!("{per_change} bytes per change; the member list is {member_list} bytes");
    assert!(per_change < 6 * member_list, "each change grew the database by {per_change} bytes");

    // A member hears each change live, once, with its delta and the members after it.
    for i in 0..2 * TOGGLES {
        let e = watcher.next_event().await;
        let Some(event::Kind::Membership(m)) = e.kind else { panic!("{e:?}") };
        let (removal, present) = (i % 2 == 0, m.conversation.as_ref().unwrap().members.contains(&toggled));
        if removal {
            assert_eq!((m.added.as_slice(), m.removed.as_slice(), present), (&[][..], &[toggled.clone()][..], false));
        } else {
            assert_eq!((m.added.as_slice(), m.removed.as_slice(), present), (&[toggled.clone()][..], &[][..], true));
        }
        assert_eq!(m.by, names[0]);
        assert_eq!(m.conversation.unwrap().members.len(), if removal { MEMBERS - 1 } else { MEMBERS });
    }

    // The same events by sync, under the member's own increasing cursors.
    let mut other = Client::login(&url, &names[2], "phone").await;
    let events = other.sync_all(0).await;
    let changes: Vec<_> = events
        .iter()
        .map(|e| match &e.kind {
            Some(event::Kind::Membership(m)) => (m.added.len(), m.removed.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changes.len(), 1 + 2 * TOGGLES, "{changes:?}");
    assert_eq!(changes[0], (MEMBERS, 0), "the creation names everyone");
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
    // The toggled member heard of its own removals and additions too.
    let mut toggled_client = Client::login(&url, &toggled, "phone").await;
    assert_eq!(toggled_client.sync_all(0).await.len(), 1 + 2 * TOGGLES);
}
