"""trilb's plugin API: subclass Plugin, declare Settings, implement the phases you need.

See docs/plugins.md for the guide and a worked example; trilb/plugin/api.py for the
types. The first-party plugins (``plugins/``, installed as ``trilb_plugins``) use only
what is exported here.
"""

from __future__ import annotations

from trilb.plugin.api import (
    CONTINUE,
    Action,
    Context,
    Continue,
    Message,
    Plugin,
    Reply,
    Request,
    Response,
    UseServer,
)

__all__ = ["CONTINUE", "Action", "Context", "Continue", "Message", "Plugin", "Reply", "Request",
           "Response", "UseServer"]  # fmt: skip
