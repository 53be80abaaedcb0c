"""The write side of an HTTP/2 connection, client's or backend's: one writer task.

Owns when an h2 connection's queued bytes go out, and the waits of those who queue them.
Exchanges (stream tasks) never write to the socket themselves: a stream reset cancels
its task at any point, and a TLS write cut off half-way must be retried with the same
bytes (OpenSSL's rule), which a cancelled task cannot do. So they queue frames in h2 and
``kick`` the writer, which sends whatever is queued when it runs (the frames of many
streams in one syscall). A body sender waits until what it queued is ``written``: a
peer that does not read then holds that stream up, not trilb's memory. How bytes reach
the socket (and what failing means) is the owner's ``write``; this module does not
know which side it is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import h2.connection

    from trilb.l7.h2proto import H2Protocol


class FrameWriter:
    """The writer task of one h2 connection and its bookkeeping.

    Args:
      h2c: the connection whose flow-control windows ``send_data`` respects: a
        client's (trilb's own H2Protocol) or a backend's (h2's, which has the same
        method names).
      write: sends what h2 has queued (``h2c.data_to_send()``); raises when the peer is
        gone or stalled, which ends ``run``.
    """

    def __init__(
        self,
        h2c: H2Protocol | h2.connection.H2Connection,
        write: Callable[[], Awaitable[None]],
    ) -> None:
        self.h2 = h2c
        self._write = write
        self._pending = trio.Event()
        # ``kicks`` counts the requests to write, ``sent`` those written so far;
        # ``_sent_event`` is set at each write; ``dead`` once a write failed.
        self.kicks = 0
        self.sent = 0
        self._sent_event = trio.Event()
        self.dead = False
        # Set when a send window may have grown (WINDOW_UPDATE, SETTINGS).
        self._window = trio.Event()

    def kick(self) -> None:
        """h2 has bytes to send: the writer sends them (with whatever else is queued
        by the time it runs)."""
        self.kicks += 1
        self._pending.set()

    def window_grew(self) -> None:
        self._window.set()
        self._window = trio.Event()

    def fail(self) -> None:
        """The connection is gone: waits end at once."""
        self.dead = True
        self._sent_event.set()
        self._window.set()
        self._pending.set()  # (and the writer returns)

    async def run(self) -> None:
        """Write whenever kicked, until ``fail`` or ``write`` raises (then ``fail``, and
        re-raise)."""
        try:
            while True:
                await self._pending.wait()
                if self.dead:
                    return
                self._pending = trio.Event()
                target = self.kicks
                await self._write()
                self.sent = target
                self._sent_event.set()
                self._sent_event = trio.Event()
        except Exception:  # (not a cancellation: the owner's end, not a failure)
            self.fail()
            raise

    async def written(self, timeout: float) -> bool:
        """Wait until all that was queued so far is written; False when it was not
        within ``timeout`` or the connection died."""
        target = self.kicks
        while self.sent < target:
            if self.dead:
                return False
            event = self._sent_event
            with trio.move_on_after(timeout) as waited:
                await event.wait()
            if waited.cancelled_caught:
                return False
        return not self.dead

    async def send_data(self, stream_id: int, data: bytes, timeout: float) -> bool:
        """Send ``data`` on a stream within the peer's windows, each frame written before
        the next is queued; False when a wait passed ``timeout`` or the connection died.

        Raises:
          H2Error (h2proto's or h2's, as ``h2c``): the stream was reset or closed
            meanwhile.
        """
        h2c = self.h2
        while data:
            if self.dead:
                return False
            room = min(h2c.local_flow_control_window(stream_id), h2c.max_outbound_frame_size)
            if room <= 0:
                window = self._window
                with trio.move_on_after(timeout) as waited:
                    await window.wait()
                if waited.cancelled_caught:
                    return False
                continue
            h2c.send_data(stream_id, data[:room])
            data = data[room:]
            self.kick()
            if not await self.written(timeout):
                return False
        return True
