"""Can the daemon run with `MemoryDenyWriteExecute=yes`, as ragvisor.service sets it?

That setting refuses memory that is writable and executable at once. A native library that needs
such memory (a JIT; old libffi for ctypes callbacks) would crash the daemon at its first use, so
the unit's choice is tested, not assumed: the daemon's code paths run in a process where the
kernel enforces the same rule (`prctl(PR_SET_MDWE)`, Linux 6.3+; systemd 252 enforces it with a
seccomp filter that refuses the same mappings with EPERM).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Exit 3: the kernel has no PR_SET_MDWE. Otherwise each step prints a line.
_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    from pathlib import Path

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(3)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        print("write+execute refused")

    import ragvisor.app  # FastAPI, uvicorn, prometheus, the whole daemon
    from ragvisor.embed.model_files import assemble_default_model
    from ragvisor.embed.onnx import OnnxEmbedder
    embedder = OnnxEmbedder(assemble_default_model(Path(sys.argv[1])), threads=1)
    print("onnx embedding", len(embedder.embed(["swap and swappiness"])[0]))

    import llama_cpp  # the embedded worker's library; no model is loaded
    Callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    callback = Callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    print("llama.cpp callback installed")
    """
)


def test_daemon_code_runs_with_write_execute_memory_refused(tmp_path: Path) -> None:
    """With W+X mappings refused, the daemon imports, embeds with ONNX Runtime, and installs a
    llama.cpp ctypes callback (libffi falls back to a double mapping).
    """
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+) to enforce W^X in a test")
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.splitlines() == [
        "write+execute refused",
        "onnx embedding 384",
        "llama.cpp callback installed",
    ]
