//! The WebSocket echo handler: every message goes back as it came, text as text.

use hioload_stack::ConnId;
use hioload_wsproto::{Message, Sender};

use crate::handler::Handler;

/// Echoes every message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, _conn: ConnId, message: Message<'_>, reply: &mut Sender<'_>) {
        reply.message(message);
    }
}
