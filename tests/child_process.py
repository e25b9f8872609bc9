"""What a test's child process needs before it execs (shared by tests that send Ctrl-C)."""

import signal


def default_sigint() -> None:
    """``preexec_fn``: Ctrl-C back to its default in the child. A job started in the background by a
    shell without job control (``bash -c 'pytest … &'``, CI scripts) inherits SIGINT ignored, and
    Python then installs no KeyboardInterrupt handler: the child would ignore the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
