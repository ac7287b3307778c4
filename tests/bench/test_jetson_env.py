"""nvpmodel mode and jetson_clocks from file trees laid out like JetPack 4 (Nano) and JetPack 5/6 (Orin Nano)."""
import os
from pathlib import Path

import pytest

from edgekit.bench.jetson_env import jetson_clocks, jetson_environment, nvpmodel_mode
from edgekit.bench.latency import environment

NANO_CONF = """\
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
CPU_A57 MAX_FREQ 1479000
GPU MAX_FREQ 921600000
< POWER_MODEL ID=1 NAME=5W >
CPU_ONLINE CORE_2 0
CPU_A57 MAX_FREQ 918000
< PM_CONFIG DEFAULT=0 >
"""
ORIN_CONF = """\
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
GPU MAX_FREQ 624750000
< POWER_MODEL ID=1 NAME=7W >
CPU_ONLINE CORE_4 0
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
< PM_CONFIG DEFAULT=2 >
"""


def _put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _cpus(root: Path, freqs, offline=()) -> None:
    for i, (lo, hi) in enumerate(freqs):
        base = "sys/devices/system/cpu/cpu{}".format(i)
        _put(root, base + "/online", "0" if i in offline else "1")
        if i not in offline:
            _put(root, base + "/cpufreq/scaling_min_freq", str(lo))
            _put(root, base + "/cpufreq/scaling_max_freq", str(hi))


def nano_jp4(root: Path, clocks: bool, status: str = "pmode:0001") -> Path:
    _put(root, "etc/nv_tegra_release", "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64")
    _put(root, "etc/nvpmodel.conf", NANO_CONF)
    if status:
        _put(root, "var/lib/nvpmodel/status", status)
    top = 918000
    _cpus(root, [(top if clocks else 102000, top)] * 2, offline=(2, 3))      # 5W: two cores off
    for i in (2, 3):
        _put(root, "sys/devices/system/cpu/cpu{}/online".format(i), "0")
    _put(root, "sys/class/devfreq/57000000.gpu/min_freq", str(640000000 if clocks else 76800000))
    _put(root, "sys/class/devfreq/57000000.gpu/max_freq", "640000000")
    return root


def orin_jp5(root: Path, cpu_pinned: bool, gpu_pinned: bool, gpu: str = "17000000.ga10b") -> Path:
    _put(root, "etc/nv_tegra_release", "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref")
    _put(root, "etc/nvpmodel/nvpmodel_p3767_0003.conf", ORIN_CONF)
    os.symlink("nvpmodel/nvpmodel_p3767_0003.conf", str(root / "etc/nvpmodel.conf"))   # as JetPack 5 links it
    _put(root, "var/lib/nvpmodel/status", "pmode:0000 fmode:quiet")
    _cpus(root, [(1510400 if cpu_pinned else 115200, 1510400)] * 6)
    _put(root, "sys/class/devfreq/{}/min_freq".format(gpu), str(624750000 if gpu_pinned else 306000000))
    _put(root, "sys/class/devfreq/{}/max_freq".format(gpu), "624750000")
    _put(root, "sys/class/devfreq/3d00000.pcie/min_freq", "1")                  # not the GPU
    _put(root, "sys/class/devfreq/3d00000.pcie/max_freq", "2")
    return root


def test_jetpack4_nano_mode_and_clocks(tmp_path):
    env = jetson_environment(str(nano_jp4(tmp_path, clocks=True)))
    assert env["l4t"].startswith("# R32 (release), REVISION: 7.1")
    assert env["nvpmodel"] == {"id": 1, "name": "5W", "source": "/var/lib/nvpmodel/status"}
    assert env["jetson_clocks"] == {"on": True, "cpus_pinned": True, "cpus": 2, "gpu": "57000000.gpu",
                                    "gpu_pinned": True}
    off = jetson_clocks(str(nano_jp4(tmp_path / "off", clocks=False)))
    assert (off["on"], off["cpus_pinned"], off["gpu_pinned"]) == (False, False, False)


@pytest.mark.parametrize("gpu", ["17000000.ga10b", "17000000.gpu"])        # JetPack 5, JetPack 6
def test_jetpack5_and_6_orin_mode_and_clocks(tmp_path, gpu):
    env = jetson_environment(str(orin_jp5(tmp_path, cpu_pinned=True, gpu_pinned=True, gpu=gpu)))
    assert env["nvpmodel"] == {"id": 0, "name": "15W", "source": "/var/lib/nvpmodel/status"}
    assert env["jetson_clocks"] == {"on": True, "cpus_pinned": True, "cpus": 6, "gpu": gpu, "gpu_pinned": True}
    half = jetson_clocks(str(orin_jp5(tmp_path / "half", cpu_pinned=True, gpu_pinned=False, gpu=gpu)))
    assert (half["on"], half["cpus_pinned"], half["gpu_pinned"]) == (False, True, False)   # all must be pinned


def test_mode_from_the_default_without_a_status_file_and_unknowns(tmp_path):
    root = nano_jp4(tmp_path, clocks=False, status="")
    assert nvpmodel_mode(str(root)) == {"id": 0, "name": "MAXN",
                                        "source": "/etc/nvpmodel.conf default (no /var/lib/nvpmodel/status)"}
    bare = tmp_path / "bare"
    _put(bare, "etc/nv_tegra_release", "# R36 (release), REVISION: 3.0")
    env = jetson_environment(str(bare))
    assert env["nvpmodel"]["id"] is None and "no /var/lib/nvpmodel/status" in env["nvpmodel"]["source"]
    assert env["jetson_clocks"]["on"] is None                     # no cpufreq to judge from: unknown, not off


def test_other_machines_have_no_jetson_section(tmp_path):
    assert jetson_environment(str(tmp_path)) is None


def test_the_bench_environment_carries_the_section(demo_bundles):
    from edgekit.runtime import EarlyExitRunner

    env = environment(EarlyExitRunner(demo_bundles("float32", "host-x86_64")))
    assert "jetson" in env and env["jetson"] == jetson_environment("/")
