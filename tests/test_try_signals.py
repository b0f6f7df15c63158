"""`backstage try` stopped by a signal, as a user stops it: Ctrl-C in its terminal (SIGINT), `kill` of a
background job (SIGTERM; a shell starts `backstage try f.toml &` with SIGINT ignored, which `try` must not
inherit), a closed terminal (SIGHUP), at the moment it says it is live, later, or while it applies.
Whatever it started stops (nothing under its directory runs on, by /proc) and its directory is removed;
the exit status is 0 for a stop once live, 128 + N before. Real nginx and a real compiled uWSGI.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from backstage.cli.sandbox import find_components
from backstage.contract import SIGNAL_AT_ENV
from harness import free_port, http_get
from test_try import Tried, as_background_job, assert_nothing_left, public_dir, wait_gone, write_app, write_production


def test_the_background_job_of_these_tests_ignores_sigint_as_a_shell_makes_it() -> None:
    probe = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          preexec_fn=as_background_job)
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_try_in_the_background_stops_everything_on(signum: signal.Signals) -> None:
    find_components()
    with public_dir("bs-try-sig-") as base:
        production = write_production(base / "production.toml", write_app(base / "app"))
        port = free_port()
        tried = Tried(str(production), "--port", str(port), background=True, env={"TMPDIR": str(base)})
        try:
            root = tried.live()
            if signum != signal.SIGINT:  # SIGINT comes the moment it says it is live; the others later
                assert http_get(port, "try.test", "/").text == "uid=0 data= secret=\n"
            tried.signal(signum)
            code = tried.finish()
        finally:
            tried.stop()
        assert code == 0, tried.text()
        assert f"stopping ({signum.name})\n" in tried.err, tried.text()
        assert_nothing_left(root)
        assert sorted(p.name for p in base.iterdir()) == ["app", "production.toml"]
        with pytest.raises(OSError):
            http_get(port, "try.test", "/", timeout=2)


def test_ctrl_c_while_it_applies_undoes_the_apply_and_stops_everything() -> None:
    find_components()
    with public_dir("bs-try-sig-") as base:
        production = write_production(base / "production.toml", write_app(base / "app"))
        # The agent sends SIGINT to the process group of `try` (as a terminal's Ctrl-C) once it has
        # linked the vassal, before it is proven ready.
        tried = Tried(str(production), background=True,
                      env={"TMPDIR": str(base), SIGNAL_AT_ENV: "vassals-linked:SIGINT:group"})
        try:
            code = tried.finish()
        finally:
            tried.stop()
        assert code == 130, tried.text()
        err = "".join(tried.err)
        assert "apply interrupted by SIGINT" in err, err
        assert err.endswith("backstage try: stopped by SIGINT before trytest went live\n"), err
        roots = [p for p in base.iterdir() if p.name.startswith("bs-try-")]
        assert roots == [], roots
        assert wait_gone(base) == [], "processes outlived `try`"
