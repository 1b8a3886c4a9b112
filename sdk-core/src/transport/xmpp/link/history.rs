//! Older messages for the app (`Request::History`): the archive is read a page of entries at a
//! time, back from the cache's oldest message, until the page holds the messages asked for
//! (receipts and markers are archive entries too) or the archive ends.

use super::super::stanza::*;
use super::super::xml::Element;
use super::super::archive;
use super::{Flow, LinkTask, PAGE, PendingIq, Query, TAIL_PAGES};
use crate::transport::*;

/// An app's request for older messages, read from the archive a page of entries at a time
/// until it holds `limit` messages (receipts and markers are archived too) or the archive ends.
pub(super) struct HistoryRead {
    conversation: String,
    /// Sequence numbers given out must stay below this (the page's upper bound).
    below: u64,
    limit: u32,
    /// The time bound of the first page, kept for the next ones.
    end: Option<String>,
    /// Messages of the pages read so far, oldest first.
    messages: Vec<RemoteMessage>,
    pages: u32,
    /// Answered `Closed` if the link ends first.
    pub(super) reply: Reply<HistoryPage>,
}

impl LinkTask {
    /// The app asks for messages before `before_seq` (the cache's oldest, by its archive id
    /// `before_id` when known).
    pub(super) async fn start_history(
        &mut self,
        conversation: String,
        before_seq: Option<u64>,
        before_id: Option<String>,
        limit: u32,
        reply: Reply<HistoryPage>,
    ) -> Flow {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stats.history_queries += 1;
        // Page by archive id when the cache knows the message; by time otherwise.
        let end = match (&before_id, before_seq) {
            (None, Some(s)) => Some(archive::format_stamp(s.saturating_sub(1))),
            _ => None,
        };
        let read = HistoryRead {
            conversation,
            below: before_seq.unwrap_or(u64::MAX),
            limit: limit.clamp(1, PAGE),
            end,
            messages: Vec::new(),
            pages: 0,
            reply,
        };
        self.read_history_page(read, before_id).await
    }

    /// Asks the archive for the page of entries before `before_id` (or before the read's time
    /// bound) for a history read.
    pub(super) async fn read_history_page(&mut self, mut read: HistoryRead, before_id: Option<String>) -> Flow {
        let id = self.new_id("hist");
        let room = self.is_room(&read.conversation);
        let (archive, with) = if room { (Some(read.conversation.as_str()), None) } else { (None, Some(read.conversation.as_str())) };
        let wanted = read.limit.saturating_sub(read.messages.len() as u32).max(1);
        let stanza = mam_query_newest(&id, &id, archive, with, read.end.as_deref(), before_id.as_deref(), wanted);
        read.pages += 1;
        self.queries.insert(id.clone(), Query::new(read.conversation.clone(), false, false));
        self.iqs.insert(id, PendingIq::History(read));
        self.send(&stanza).await
    }

    /// A page of a history read arrived: read the next older one while the messages are too
    /// few, else answer.
    pub(super) async fn on_history_page(&mut self, mut read: HistoryRead, results: Vec<Element>, complete: bool) -> Flow {
        let conversation = read.conversation.clone();
        let room = self.is_room(&conversation);
        let oldest_entry = results.first().and_then(|r| r.get_attr("id")).map(str::to_owned);
        let mut page = Vec::new();
        for result in results {
            if let Some(entry) = read_archived(&result, room.then_some(conversation.as_str()), &self.me) {
                if let Archived::Message { conversation: c, sender, client_id, stable_client_id, reply_id, body, receipts } = entry.what {
                    let sender = if room { self.occupant(&conversation, sender) } else { sender };
                    page.push(RemoteMessage {
                        server_id: entry.archive_id,
                        conversation: c,
                        seq: entry.stamp_us,
                        sender,
                        client_id,
                        stable_client_id,
                        reply_id,
                        body,
                        server_time_ms: (entry.stamp_us / 1000) as i64,
                        receipts,
                    });
                }
            }
        }
        page.append(&mut read.messages);
        read.messages = page;
        let more_wanted = read.messages.len() < read.limit as usize && read.pages < TAIL_PAGES;
        if !complete && more_wanted {
            if let Some(oldest) = oldest_entry {
                return self.read_history_page(read, Some(oldest)).await;
            }
        }
        // Newest first, each below the one after it: archive stamps may repeat (Prosody 0.12
        // stamps whole seconds), positions in the archive do not.
        let mut messages = read.messages;
        messages.reverse();
        let mut bound = read.below;
        for m in &mut messages {
            m.seq = m.seq.min(bound.saturating_sub(1));
            bound = m.seq;
        }
        let _ = read.reply.send(Ok(HistoryPage { messages, has_more: !complete }));
        Ok(())
    }
}
