"""``python tests/nbmake_run.py ARGS`` runs ``python -m pytest ARGS`` (nbmake's notebook runs) with two changes to
nbclient, the notebook client that nbmake drives: its Output-widget messages to the kernel no longer leave a cell's
reply unread, and a run whose client reads a reply late fails instead of passing slowly.

Why cells stalled after ipywidgets (jupyter/nbclient#312, our lessons 02, 04 and 09). ``widgets.interact`` draws
into an Output widget. nbclient stands in for a browser's Output widget: each output the kernel routes into it is
sent back to the kernel as a ``comm_msg`` on the shell socket, from the task that reads iopub, while another task
awaits the cell's ``execute_reply`` on that same shell socket. jupyter_client's ``Session.send`` sends through a
plain (blocking) shadow of the asyncio socket. A ZeroMQ socket wakes pollers through an edge-triggered file
descriptor, and a send also takes in the socket's pending events (an arrived reply among them), so after a send
whoever waits must re-read ``zmq.EVENTS``. pyzmq's asyncio socket does that after sends made through it (pyzmq#1208,
for the same starvation in pyzmq#1203), but it never sees a send made on a shadow. When the kernel's reply lands
around such a send, nothing wakes the waiting task: the reply sits in the socket until the cell's timeout, when a last
poll finds it and the run carries on as if nothing happened (120 s lost per stall). The kernel is idle and has
answered; JupyterLab is not affected (jupyter_server sends through a ZMQStream, which re-reads the events itself).

The fix sends those comm messages through the asyncio socket, so pyzmq re-checks the events for the waiting task.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pytest
from nbclient import NotebookClient
from nbclient.jsonutil import json_clean
from nbclient.output_widget import OutputWidget

# A reply the client reads later than this after the kernel sent it fails the run. Reading one takes milliseconds;
# nbclient then waits up to 4 s (its iopub_timeout) for the cell's last outputs; a busy machine adds seconds, not tens.
REPLY_LAG_S = 30.0


def _publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
    """nbclient's ``OutputWidget._publish_msg``, sending through the client's asyncio shell socket."""
    content = json_clean(dict(data=data or {}, comm_id=self.comm_id, **keys))
    session = self.kernel_client.session
    msg = session.msg(msg_type, content=content, parent=self.parent_header, metadata=metadata or {})
    sent = self.kernel_client.shell_channel.socket.send_multipart(session.serialize(msg) + list(buffers or []))
    if hasattr(sent, "done") and sent.done():
        sent.result()  # a send that failed at once raises here, as Session.send would


_execute_cell = NotebookClient.async_execute_cell


class ReplyReadLate(RuntimeError):
    """Not a CellTimeoutError: nbmake reports that one by looking for a cell without a reply, and this cell has one."""


async def _execute_cell_in_time(self, cell, cell_index, *args, **kwargs):
    """nbclient's ``async_execute_cell``, failing when the kernel's reply reached the client late (a stall that
    nbclient would otherwise end at the cell's timeout and hide)."""
    cell = await _execute_cell(self, cell, cell_index, *args, **kwargs)
    replied = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")  # stamped by the kernel
    if replied:
        lag = (datetime.now(timezone.utc) - datetime.fromisoformat(replied.replace("Z", "+00:00"))).total_seconds()
        if lag > REPLY_LAG_S:
            raise ReplyReadLate(
                f"cell {cell_index}: the kernel replied at {replied}, the client read the reply {lag:.0f} s later "
                f"(a stall in the notebook client, not in the kernel)"
            )
    return cell


def patch_nbclient() -> None:
    # Fail loudly if nbclient changes what we replace, rather than run unpatched.
    assert callable(getattr(OutputWidget, "_publish_msg", None)), "nbclient.OutputWidget._publish_msg is gone"
    assert callable(getattr(NotebookClient, "async_execute_cell", None)), "NotebookClient.async_execute_cell is gone"
    OutputWidget._publish_msg = _publish_msg
    NotebookClient.async_execute_cell = _execute_cell_in_time


if __name__ == "__main__":
    patch_nbclient()
    sys.exit(pytest.main(sys.argv[1:]))
