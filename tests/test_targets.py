import os

import pytest
import yaml

from edgekit.errors import ConfigError
from edgekit.targets import Target, get_target, list_targets, load_target_file, targets_dir

BOARDS = {"raspberry-pi-4", "raspberry-pi-5", "raspberry-pi-zero-2w", "jetson-nano", "jetson-orin-nano",
          "host-x86_64"}


def test_every_board_has_a_valid_profile():
    names = {t.name for t in list_targets()}
    assert names == BOARDS


def test_fp16_compute_only_on_armv8_2_cores():
    fp16 = {t.name for t in list_targets() if t.fp16_compute}
    assert fp16 == {"raspberry-pi-5", "jetson-orin-nano"}


def test_template_is_a_valid_profile():
    with open(os.path.join(targets_dir(), "_template.yaml")) as f:
        data = yaml.safe_load(f)
    assert Target.from_dict(data, "_template.yaml").name == "my-board"


def _profile(**changes):
    with open(os.path.join(targets_dir(), "raspberry-pi-4.yaml")) as f:
        data = yaml.safe_load(f)
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"arch": "mips"}, "allowed: aarch64, armv7l, x86_64"),
    ({"cores": 0}, "cores: expected an integer from 1"),
    ({"default_threads": 9}, "default_threads: expected an integer from 1 to 4"),
    ({"fp16_compute": "yes"}, "expected true or false"),
    ({"precisions": ["int8", "int2"]}, "allowed: float32, float16, int8, int16x8"),
    ({"power_model": {"idle_w": 5, "active_w": 1, "source": "x"}}, "below idle_w"),
    ({"python": {"min": "3.12", "max": "3.8"}}, "above max"),
])
def test_bad_values_are_errors(changes, message):
    with pytest.raises(ConfigError) as exc:
        Target.from_dict(_profile(**changes), "raspberry-pi-4.yaml")
    assert message in str(exc.value)


def test_file_name_must_match(tmp_path):
    p = tmp_path / "other.yaml"
    p.write_text(yaml.safe_dump(_profile()))
    with pytest.raises(ConfigError, match="must match the file name"):
        load_target_file(str(p))


def test_unknown_target_lists_known():
    with pytest.raises(ConfigError) as exc:
        get_target("raspberry-pi-9")
    assert "raspberry-pi-4" in str(exc.value) and "jetson-nano" in str(exc.value)
