"""Sphinx extension: while myst-nb executes the chapters, wait for kernel messages in one-second polls.

A lost pyzmq asyncio wake-up (jupyter/nbclient#312, zeromq/pyzmq#2173) otherwise leaves a kernel idle for the
whole cell timeout (120 s in ``_config.yml``) before the build goes on — measured on §2.5, whose two ``interact``
widgets made its build take about 160 s instead of 40 s. The fix lives in the package, where
``python -m diffu.bench notebooks`` uses it too: :func:`diffu.bench.notebooks.install_sliced_reply_polling` explains
it. Only the execution in ``jupyter-book build`` (and the notebook benchmark) is affected; nbval in the tests uses
its own client.
"""

from __future__ import annotations

from diffu.bench.notebooks import install_sliced_reply_polling


def setup(app):
    install_sliced_reply_polling()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
