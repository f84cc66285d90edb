"""twist-mos build: the page hides the systems, the key maps them back, inputs are checked early."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from twist.errors import ConfigError, MissingInputError, RunExistsError
from twist.mos import build_page, load_key


def test_the_page_names_no_system_and_the_key_maps_every_item_back(tmp_path, mos):
    inputs = mos.make_inputs(tmp_path / "in", n_prompts=3)
    key = build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False)
    page = (tmp_path / "t" / "page" / "index.html").read_text()
    assert all(name not in page for name in ("warm", "cold", "original", str(tmp_path)))
    manifest = json.loads(page.split('<script id="manifest" type="application/json">')[1].split("</script>")[0])
    assert manifest["test_id"] == key["test_id"] and len(manifest["items"]) == 9
    assert [it["id"] for it in manifest["items"]] == sorted(it["id"] for it in manifest["items"])
    assert sorted(p.name for p in (tmp_path / "t" / "page").iterdir()) == ["audio", "index.html"]
    by_id = {it["id"]: it for it in key["items"]}
    for it in manifest["items"]:
        k = by_id[it["id"]]
        wav, sr = sf.read(str(tmp_path / "t" / "page" / it["audio"]))
        assert sr == 16000 and len(wav) / sr == pytest.approx(k["duration"], abs=1e-3)
        # every clip is level-matched to -23 dBFS RMS
        assert 20 * np.log10(np.sqrt(np.mean(wav**2))) == pytest.approx(-23.0, abs=0.1)
        # the key knows where each clip came from: the .continuation.wav files are not items
        assert Path(k["source"]).name == f"{k['prompt']}.wav"
    assert {(k["system"], k["kind"]) for k in key["items"]} == {("warm", "system"), ("cold", "system"),
                                                               ("original", "gold")}
    assert load_key(tmp_path / "t")["test_id"] == key["test_id"]


def test_the_same_inputs_give_the_same_test_and_a_different_test_is_not_overwritten(tmp_path, mos):
    inputs = mos.make_inputs(tmp_path / "in", n_prompts=2)
    a = build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False)
    b = build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False)
    assert a["test_id"] == b["test_id"]
    with pytest.raises(RunExistsError, match="ratings collected for it would become unscorable"):
        build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False,
                   settings={"seed": 1})
    c = build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False,
                   settings={"seed": 1}, overwrite=True)
    assert c["test_id"] != a["test_id"] and not list((tmp_path / "t").glob(".page.tmp-*"))


def test_prompts_common_to_all_systems_clip_cutting_and_resynth_runs(tmp_path, mos):
    warm = mos.write_system(tmp_path / "warm", 3, 220)
    cold = mos.write_system(tmp_path / "cold", 2, 330)  # lacks utt2
    resynth = mos.write_system(tmp_path / "resynth" / "wavs", 3, 550, generate_dir=False).parent
    key = build_page({"warm": warm, "cold": cold}, tmp_path / "t", resynth=resynth, progress=False,
                     settings={"clip_seconds": 0.5})
    assert key["prompts"] == ["utt0", "utt1"] and key["toplines"] == ["resynth"] and key["gold_system"] is None
    assert {it["duration"] for it in key["items"]} == {0.5}


def test_bad_inputs_fail_early_naming_the_setting(tmp_path, mos):
    inputs = mos.make_inputs(tmp_path / "in", n_prompts=2)
    with pytest.raises(ConfigError, match="'original' is reserved"):
        build_page({"original": inputs["systems"]["warm"]}, tmp_path / "t", progress=False)
    with pytest.raises(MissingInputError, match="systems.cold: .*nowhere does not exist"):
        build_page({"warm": inputs["systems"]["warm"], "cold": tmp_path / "nowhere"}, tmp_path / "t", progress=False)
    (inputs["original"] / "utt1.wav").unlink()
    with pytest.raises(MissingInputError, match=r"original: no clip for 1 prompt\(s\), e.g. \['utt1'\]"):
        build_page(inputs["systems"], tmp_path / "t", original=inputs["original"], progress=False)
    with pytest.raises(ConfigError, match=r"unknown setting sead \(did you mean seed\?\)"):
        build_page(inputs["systems"], tmp_path / "t", settings={"sead": 1}, progress=False)
    assert not (tmp_path / "t" / "key.json").exists()


def test_cli_build_prints_the_page_path(tmp_path, mos, capsys):
    from hydra import compose, initialize_config_dir

    import twist
    from twist.cli.mos import build

    inputs = mos.make_inputs(tmp_path / "in", n_prompts=2)
    systems = "{" + ",".join(f"{k}:'{v}'" for k, v in inputs["systems"].items()) + "}"
    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="mos_build", overrides=[f"systems={systems}", f"original='{inputs['original']}'",
                                                          f"out_dir={tmp_path / 't'}", "progress=false",
                                                          "page.prompts_per_rater=1"])
    page = build.run(cfg)
    assert f"listening-test page: {page}" in capsys.readouterr().out
    assert page.is_file() and load_key(tmp_path / "t")["settings"]["prompts_per_rater"] == 1


@pytest.mark.parametrize("systems", ["ms/A", "[ms/A,ms/B]"])
def test_systems_given_as_a_path_instead_of_a_mapping_is_one_line_naming_the_setting(tmp_path, capsys, systems):
    from hydra import compose, initialize_config_dir

    import twist
    from twist.cli.mos import build

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="mos_build", overrides=[f"systems={systems}", f"out_dir={tmp_path / 't'}"])
    with pytest.raises(SystemExit) as e:
        build.run(cfg)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err, err
    assert err.startswith("twist-mos build: error: systems must be a mapping of system name to directory") and "ms/A" in err
    assert not (tmp_path / "t").exists()
