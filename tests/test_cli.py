import json

import pytest

from hmdiff_ros.cli import main


def test_info_lists_versions_backends_and_body_models(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["numpy"] and info["packages"]["torch"]
    assert info["backends"]["torch"]["available"] is True
    assert {"onnxruntime", "tensorrt"} <= set(info["backends"])
    assert info["body_models"]["topology"]["coarse_vertices"] == 600
    assert {"anny", "smpl/smplx"} <= set(info["body_models"])
    assert isinstance(info["gpus"], list)


def test_info_text_names_every_section(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for section in ("packages:", "backends:", "body models:", "gpus:"):
        assert section in text


def test_assets_check_reports_the_roundtrip_error(capsys, anny_body):
    assert main(["assets", "check", "--samples", "16", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_bodies"] == 16 and result["num_coarse"] == 600
    assert 0 < result["roundtrip_mm"]["mean_mm"] < 2.0
    assert result["roundtrip_mm"]["mean_mm"] <= result["roundtrip_mm"]["max_mm"]
    assert result["joints_mm"]["mean_mm"] < 1.0


def test_a_missing_asset_is_a_clear_error_not_a_traceback(capsys, tmp_path):
    assert main(["assets", "check", "--asset", str(tmp_path / "none.npz")]) == 2
    assert "none.npz' not found" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


def test_train_without_out_uses_the_config_folder(monkeypatch, capsys):
    import hmdiff_ros.model.train as train_module
    from hmdiff_ros.cli import main as cli_main

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg: seen.setdefault("cfg", cfg) and {})
    assert cli_main(["train", "--steps", "3"]) == 0
    assert seen["cfg"].out == "runs/hmdiff" and seen["cfg"].steps == 3


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import hmdiff_ros.info as info

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "collect_info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "hmdiff info: interrupted (SIGINT)\n"


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
    import hmdiff_ros.info as info

    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(info, "collect_info", broken)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err and "--debug" in err
    assert main(["info", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
