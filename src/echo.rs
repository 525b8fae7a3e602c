//! The WebSocket echo handler: every message goes back as it came, text as text.

use hioload_stack::ConnId;
use hioload_wsproto::Message;

use crate::handler::{Context, Handler};

/// Echoes every message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type Message = ();

    fn on_message(&mut self, _conn: ConnId, message: Message<'_>, cx: &mut Context<'_, ()>) {
        cx.reply(message);
    }
}
