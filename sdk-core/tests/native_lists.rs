//! The native transport's conversation list against the reference server, which answers it in
//! pages (at most 100 conversations, and one frame, each): the transport follows the pages and
//! answers with the whole list.

mod common;

use common::*;
use missive::transport::native::NativeTransport;
use missive::transport::{Auth, Outgoing, Request, Transport};
use tokio::sync::oneshot;

async fn request<T>(link: &missive::transport::Link, make: impl FnOnce(missive::transport::Reply<T>) -> Request) -> T {
    let (tx, rx) = oneshot::channel();
    link.outgoing.send(Outgoing::Request(make(tx))).await.expect("link open");
    tokio::time::timeout(WAIT, rx).await.expect("answered in time").expect("answered").expect("accepted")
}

#[tokio::test]
async fn the_conversation_list_follows_the_servers_pages() {
    let server = TestServer::start().await;
    let transport = NativeTransport::new(server.url());
    let auth = Auth::Register { username: "alice".into(), password: PASSWORD.into(), device: "phone".into() };
    let link = transport.connect(auth).await.expect("registered");
    let mut created = vec![];
    for i in 0..130 {
        let c = request(&link, |reply| Request::CreateGroup { title: format!("g{i}"), members: vec![], reply }).await;
        created.push(c.id);
    }
    let list = request(&link, |reply| Request::ListConversations { reply }).await;
    let mut ids: Vec<String> = list.into_iter().map(|c| c.id).collect();
    ids.reverse();
    assert_eq!(ids, created, "all 130, once each");
}
