import quickstart


def test_quickstart_builds_predicts_saves_and_reloads(tmp_path, capsys):
    assert quickstart.main(["--output", str(tmp_path), "--image-size", "8"])
    assert (tmp_path / "model.keras").exists()
    assert "predictions identical = True" in capsys.readouterr().out
