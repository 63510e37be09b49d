"""Third-party start-up lines stay off stderr by default and show when verbose; nothing else
written to stderr is lost."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from hmdiff_ros import quiet

# the lines MediaPipe 0.10.14 prints on its first frame (see hmdiff_ros.quiet)
KNOWN = (
    "Created TensorFlow Lite XNNPACK delegate",
    "All log messages before absl::InitializeLog()",
    "Feedback manager requires a model with a single signature inference",
    "SymbolDatabase.GetPrototype() is deprecated",
)


def _run(code: str, verbose: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != quiet.VERBOSE_ENV}
    if verbose:
        env[quiet.VERBOSE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )


PRIOR_ON_DEMO = """
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.prior.mediapipe_prior import MediaPipePrior

    image = read_image(DEMO_IMAGE)
    for video in (False, True):
        prior = MediaPipePrior(static_image_mode=not video)
        assert prior.detect(image) is not None
        prior.reset()
        assert prior.detect(image) is not None and prior.detect(image, box=[100, 50, 400, 600]) is not None
        prior.close()
    print("ok")
"""


def test_the_prior_is_quiet_by_default_and_verbose_shows_the_lines():
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    default = _run(PRIOR_ON_DEMO)
    assert default.returncode == 0 and default.stdout.strip() == "ok", default.stderr
    assert not [k for k in KNOWN if k in default.stderr], default.stderr
    verbose = _run(PRIOR_ON_DEMO, verbose=True)
    assert verbose.returncode == 0, verbose.stderr
    shown = [k for k in KNOWN if k in verbose.stderr]
    assert shown, verbose.stderr  # the lever is what hides them: without it they print


def test_captured_output_that_is_not_known_noise_is_written_back():
    result = _run("""
        import os, sys
        from hmdiff_ros.quiet import third_party_output

        with third_party_output():
            os.write(2, b"W0000 inference_feedback_manager.cc:114] Feedback manager requires a model with a "
                        b"single signature inference.\\n")
            os.write(2, b"E0000 calculator_graph.cc:887] a real error\\n")
            print("a python message", file=sys.stderr)
        try:
            with third_party_output():
                os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
                raise RuntimeError("ours")
        except RuntimeError:
            pass
        os.write(2, b"after\\n")  # fd 2 is the real stderr again
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["E0000 calculator_graph.cc:887] a real error", "a python message", "after"]


def test_an_error_inside_the_block_still_reaches_the_user():
    result = _run("""
        from hmdiff_ros.quiet import third_party_output

        with third_party_output():
            raise ValueError("the image is empty")
    """)
    assert result.returncode == 1 and "ValueError: the image is empty" in result.stderr


def test_an_explicit_choice_outlasts_the_import_time_default(monkeypatch):
    monkeypatch.setattr(quiet, "_verbose", None)
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with warnings.catch_warnings():  # quiet_third_party changes the warning filters
        assert quiet.quiet_third_party() is False
        monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
        assert quiet.quiet_third_party() is True and quiet.is_verbose()
        assert quiet.quiet_third_party(False) is False
        assert quiet.quiet_third_party() is False  # the prior's import-time call keeps the CLI's choice
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("SymbolDatabase.GetPrototype() is deprecated. Please use ...", UserWarning, stacklevel=1)
        assert seen == []
        assert quiet.quiet_third_party(True) is True
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("SymbolDatabase.GetPrototype() is deprecated. Please use ...", UserWarning, stacklevel=1)
        assert len(seen) == 1
