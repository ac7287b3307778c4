"""Import TensorFlow quietly: its CUDA plug-in registration lines on a CPU machine are noise on a CLI."""
import contextlib
import io
import os
import sys
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence file descriptors 1 and 2 and Python's stdout (the converter prints 'Saved artifact at ...'
    to stdout, which would break --json). Errors still propagate as exceptions."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


with quiet():
    import tensorflow as tf     # convert/__init__.py imports this module first, so this import is TensorFlow's first


def tensorflow():
    return tf
