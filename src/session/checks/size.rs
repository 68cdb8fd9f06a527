//! `content.max_message_size`: headers and body counted as they come, the
//! message refused as soon as it is over.

use super::{Check, Cx, Flow};
use crate::config::Config;

pub(super) struct Size;

pub(super) fn new(_: &Config) -> Option<Size> {
    Some(Size)
}

impl Size {
    fn judge(cx: &mut Cx<'_>) -> Flow {
        let verdict = super::content::rules::size(cx.msg.size, &cx.msg.config.content);
        cx.decide(verdict)
    }
}

impl Check for Size {
    fn header(&mut self, cx: &mut Cx<'_>, _: &[u8], _: &[u8]) -> Flow {
        Self::judge(cx)
    }

    fn body(&mut self, cx: &mut Cx<'_>, _: &[u8]) -> Flow {
        Self::judge(cx)
    }
}
