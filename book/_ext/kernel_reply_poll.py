"""Sphinx extension: while myst-nb executes the chapters, wait for kernel messages in one-second polls.

Why: nbclient waits for a cell's ``execute_reply`` with one ``await socket.poll(timeout)`` on the shell channel
(``jupyter_client.channels.AsyncZMQSocketChannel.get_msg``) while it reads IOPub on the same event loop. pyzmq's
asyncio poll watches zmq's edge-triggered file descriptor, and a wake-up can be lost when both sockets are busy (many
widget comm messages, then the reply): the reply is already queued, but the poll only notices it at its timeout,
when pyzmq polls once more without waiting. The kernel then sits idle for the whole cell timeout (120 s in
``_config.yml``) before the build goes on. Reported upstream as jupyter/nbclient#312 (cells with ipywidgets "sometimes
block") and zeromq/pyzmq#2173 (missed asyncio wake-ups); measured here on §2.5, whose two ``interact`` widgets made
its build take about 160 s instead of 40 s, with the kernel idle in between.

The fix polls in slices of at most one second until the caller's own deadline (or forever for ``timeout=None``):
a lost wake-up then costs at most a second, and a message that is really missing still times out when the caller
asked for it to. Only the execution in ``jupyter-book build`` is affected (nbval in the tests uses its own client).
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client.channels import AsyncZMQSocketChannel

#: The longest single wait of one poll, in seconds: the most a lost wake-up can cost.
SLICE = 1.0

_get_msg = AsyncZMQSocketChannel.get_msg


async def _get_msg_sliced(self, timeout: float | None = None):
    """``AsyncZMQSocketChannel.get_msg`` with the same contract, in polls of at most :data:`SLICE` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        wait = SLICE if left is None else min(SLICE, left)
        try:
            return await _get_msg(self, wait)
        except Empty:
            if left is not None and left <= SLICE:
                raise


def setup(app):
    AsyncZMQSocketChannel.get_msg = _get_msg_sliced
    return {"parallel_read_safe": True, "parallel_write_safe": True}
