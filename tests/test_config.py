import pytest

from image_od.files.settings import ConfigError, parse_override
from vad.config import load_config


def test_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  epochs: 3\n  widths: [8, 16]\nscore: {motion_weight: 1}\n")
    c = load_config(p, ["model.epochs=5", "regions.sources=[file, motion]", "regions.box_file=b.npz",
                        "flow.raft_weights=w.pt"])
    assert c.model.epochs == 5 and c.model.widths == [8, 16]
    assert c.score.motion_weight == 1.0 and isinstance(c.score.motion_weight, float)
    assert c.regions.sources == ["file", "motion"] and c.flow.raft_weights == "w.pt"
    assert c.cubes.size == 32


def test_bad_keys_and_types_are_named(tmp_path):
    with pytest.raises(ConfigError, match="model.epoch"):
        load_config(None, ["model.epoch=5"])
    with pytest.raises(ConfigError, match="model.epochs"):
        load_config(None, ["model.epochs=many"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("model.epochs")


def test_the_training_fast_reference_needs_the_semi_supervised_mode():
    with pytest.raises(ConfigError, match="score.fast_reference"):
        load_config(None, ["score.fast_reference=training"])
    with pytest.raises(ConfigError, match="score.fast_reference"):
        load_config(None, ["score.fast_reference=training", "model.train_on=training", "score.position_norm=off"])
    assert load_config(None, ["score.fast_reference=training", "model.train_on=training"]).score.fast_percentile == 99


def test_the_semi_supervised_bank_option_needs_that_mode():
    with pytest.raises(ConfigError, match="attributes.semi_bank"):
        load_config(None, ["attributes.semi_bank=both"])
    with pytest.raises(ConfigError, match="attributes.semi_bank"):
        load_config(None, ["attributes.semi_bank=all", "model.train_on=training"])
    assert load_config(None, ["attributes.semi_bank=both", "model.train_on=training"]).attributes.semi_bank == "both"
    with pytest.raises(ConfigError, match="regions.join_fragments"):
        load_config(None, ["regions.join_fragments=true"])  # motion boxes only: nothing to join into
    for sets in (["attributes.semi_mirror=true"],
                 ["attributes.semi_mirror=true", "model.train_on=training", "attributes.semi_bank=both"]):
        with pytest.raises(ConfigError, match="attributes.semi_mirror"):
            load_config(None, sets)


def test_the_processing_size_bounds_are_checked():
    with pytest.raises(ConfigError, match="data.max_side.*never shrink"):
        load_config(None, ["data.max_side=8"])
    with pytest.raises(ConfigError, match=r"data.max_side.*data.min_side \(240, .*data.min_side=0 to never enlarge"):
        load_config(None, ["data.min_side=240", "data.max_side=200"])
    assert load_config(None, ["data.min_side=240", "data.max_side=240"]).data.max_side == 240


def test_shipped_configs_load():
    """Every shipped config loads, and every value it sets reaches the resolved config unchanged."""
    from pathlib import Path

    import yaml

    from image_od.files.settings import to_dict

    paths = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert {"avenue", "demo", "paper", "ucsd_ped1", "ucsd_ped2"} <= {p.stem for p in paths}

    def leaves(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    for path in paths:
        resolved = leaves(to_dict(load_config(path)))
        written = leaves(yaml.safe_load(path.read_text()))
        assert written and all(resolved[k] == v for k, v in written.items()), path


def test_dataset_configs_hold_only_data_format_facts():
    """The dataset configs say how a dataset looks (frame layout, the cloze-test recipe's per-dataset blur and box
    areas, whether its camera sees the scene in strong perspective), never a method setting: those are the project defaults, chosen once for every dataset (a stale
    ``detector_score`` in the Ped1 file once overrode the detector threshold chosen for Yolo-Fastest)."""
    from pathlib import Path

    import yaml

    allowed = {"name", "seed", "data", "cubes", "flow.method", "flow.preset", "regions.motion_blur",
               "regions.motion_threshold", "regions.motion_min_area", "regions.cover_thr", "regions.detector_min_area",
               "score.perspective"}
    for stem in ("ucsd_ped1", "ucsd_ped2", "avenue"):
        written = yaml.safe_load((Path(__file__).parents[1] / "configs" / f"{stem}.yaml").read_text())
        keys = [f"{section}.{k}" if isinstance(v, dict) else section
                for section, v in written.items() for k in (v if isinstance(v, dict) else [None])]
        method_settings = [k for k in keys if k not in allowed and k.split(".")[0] not in allowed]
        assert not method_settings, f"configs/{stem}.yaml sets method settings: {method_settings}"


def test_each_config_processes_its_own_frame_size_unchanged_and_smaller_footage_enlarged():
    """``data.min_side`` is the frame size a config's pixel settings were made for: a no-op on its dataset's own
    frames (the benchmark figures do not move), an enlargement for smaller footage (Avenue at 320x180 is processed at
    640x360 with Avenue's settings; any 238x158 video at 362x240 with the defaults, Ped2's settings)."""
    from vad.cubes import processing_size

    native = {"ucsd_ped2": (240, 360), "avenue": (360, 640), "demo": (120, 160)}
    for stem, size in native.items():
        d = load_config(f"configs/{stem}.yaml").data
        assert processing_size(size, d.min_side, d.max_side) == size, stem
    d = load_config("configs/ucsd_ped1.yaml").data  # Ped1 takes the defaults' pixel settings, made for 240 rows
    assert processing_size((158, 238), d.min_side, d.max_side) == (240, 362)
    d = load_config("configs/avenue.yaml").data
    assert processing_size((180, 320), d.min_side, d.max_side) == (360, 640)
    d = load_config(None).data
    assert processing_size((158, 238), d.min_side, d.max_side) == (240, 362)
    assert processing_size((576, 768), d.min_side, d.max_side) == (480, 640)


def test_config_files_layer_in_order():
    c = load_config(["configs/ucsd_ped2.yaml", "configs/paper.yaml"], ["model.epochs=4"])
    assert c.name == "ucsd_ped2" and c.model.widths == [32, 64, 128] and c.score.motion_weight == 0.0
    assert c.model.epochs == 4


def test_a_bare_off_is_the_word_not_a_boolean():
    """YAML 1.1 reads `off` as false: a string setting takes it as the word, from --set and from files."""
    c = load_config(None, ["attributes.use=off", "discriminative.use=off"])
    assert c.attributes.use == "off" and c.discriminative.use == "off"


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system ['true']", "[1", ": x: y"])
def test_bad_yaml_in_a_set_value_is_one_clear_error(value):
    with pytest.raises(ConfigError, match="--set model.epochs=.*is not valid YAML"):
        load_config(None, [f"model.epochs={value}"])
