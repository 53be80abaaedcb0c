"""trilb's plugin API: subclass Plugin, declare Settings, implement the phases you need.

See docs/plugins.md for the guide and a worked example; trilb/plugin/api.py for the
types. The first-party plugins (``plugins/``, installed as ``trilb_plugins``) use only
what is exported here.
"""

from __future__ import annotations

from trilb.plugin.api import (
    CONTINUE,
    DROP,
    Action,
    BodyAction,
    Context,
    Continue,
    Drop,
    Message,
    MessageAction,
    Plugin,
    Replace,
    Reply,
    Request,
    Response,
    UseServer,
    WsMessage,
)

__all__ = ["CONTINUE", "DROP", "Action", "BodyAction", "Context", "Continue", "Drop", "Message",
           "MessageAction", "Plugin", "Replace", "Reply", "Request", "Response", "UseServer",
           "WsMessage"]  # fmt: skip
