"""4-bit convolution weights stored nibble-packed: a real stage round trips through pack and restore with identical
interpreter outputs, the runtime restores and checks packed stage files, refuses tampered ones and an edgekit that
reads schema version 1 only refuses a packed bundle; convert's default adaptive plan on the demo packs filters."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from edgekit.errors import BundleError
from edgekit.manifest import read_manifest
from tests.bundle_edit import copy_bundle, edit_manifest, read_stage, write_stage
from tests.conftest import CALIB, DEMO, ROOT, TEST, conv_dense_builds


def _small_stage():
    """A real converted stage (conv + dense, int8 build) and the same with the conv at 4-bit weights."""
    from edgekit.convert.precision.fc4 import four_bit
    from edgekit.convert.precision.graph import read_ops

    _, x, fblob, qblob = conv_dense_builds(32, 16, 32)
    conv = [o.scope for o in read_ops(fblob) if o.op == "CONV_2D"]
    return x, qblob, four_bit(qblob, fblob, conv)


def _outputs(blob, x):
    from edgekit.runtime.interpreter import load_backend

    run = load_backend().interpreter(model_content=blob, num_threads=1).get_signature_runner()
    return np.concatenate([run(image=x[i:i + 1])["y"] for i in range(len(x))])


def test_a_four_bit_conv_stage_packs_and_restores_to_the_same_model_and_outputs():
    from edgekit.convert.pack import four_bit_regions, store
    from edgekit.convert.precision.kernels import XNNPACK, kernels_by_scope
    from edgekit.runtime.packed import unpack_regions

    x, int8_blob, blob = _small_stage()
    assert four_bit_regions(int8_blob) == []                        # 8-bit filters are never packed
    regions = four_bit_regions(blob)
    assert len(regions) == 1 and regions[0][1] == 32 * 3 * 3 * 3    # the conv filter, int8-typed, 4-bit values
    assert set(kernels_by_scope(blob).values()) == {XNNPACK}        # still a plain int8 model: XNNPACK runs it
    stored = store(blob)
    assert len(stored.data) == len(blob) - regions[0][1] // 2
    assert stored.packing.sha256 == hashlib.sha256(blob).hexdigest() and stored.packing.size_bytes == len(blob)
    restored = unpack_regions(stored.data, stored.packing.regions, stored.packing.size_bytes)
    assert restored == blob
    np.testing.assert_array_equal(_outputs(restored, x), _outputs(blob, x))
    assert not np.array_equal(_outputs(blob, x), _outputs(int8_blob, x))   # the 4-bit weights are in use
    assert store(int8_blob).packing is None and store(int8_blob).data == int8_blob


def test_nibbles_round_trip_every_value_and_refuse_wider_ones():
    from edgekit.runtime.packed import pack, unpack

    values = np.arange(-8, 8, dtype=np.int8).tobytes() + b"\x05"
    assert unpack(pack(values), len(values)) == values and len(pack(values)) == 9
    assert pack(np.array([1, -1], np.int8).tobytes()) == b"\xf1"        # the first value in the low nibble
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack(np.array([8], np.int8).tobytes())


def make_packed(src: str, dest: str):
    """A copy of the int8 bundle `src` at `dest` with the filters of its last stage's convolutions divided down to
    4-bit values and stored packed (schema version 2); (the bundle, that stage, its restored model)."""
    from edgekit.convert.pack import conv_filter_regions, store
    from edgekit.manifest import PACKED_SCHEMA_VERSION

    bundle = copy_bundle(src, dest)
    k = len(read_manifest(bundle).stages) - 1
    model = bytearray(read_stage(bundle, k))
    for off, n in conv_filter_regions(bytes(model)):
        model[off:off + n] = (np.frombuffer(bytes(model[off:off + n]), np.int8) // 16).astype(np.int8).tobytes()
    stored = store(bytes(model))
    write_stage(bundle, k, stored.data)

    def packed(d):
        d["schema_version"] = PACKED_SCHEMA_VERSION
        d["stages"][k]["packed"] = stored.packing.to_dict()
    edit_manifest(bundle, packed)
    return bundle, k, bytes(model)


@pytest.fixture
def packed_bundle(demo_bundles, tmp_path):
    return make_packed(demo_bundles("int8"), str(tmp_path / "packed"))


def test_the_runtime_restores_a_packed_stage_before_building_its_interpreter(packed_bundle, test_split):
    from edgekit.runtime import EarlyExitRunner
    from edgekit.runtime.guard import load_checked

    bundle, k, model = packed_bundle
    manifest, blobs, _ = load_checked(bundle)
    assert manifest.stages[k].packed is not None and manifest.stages[k].size_bytes < len(model)
    assert blobs[k] == model
    runner = EarlyExitRunner(bundle, num_threads=1)
    for j, step, values, res in runner.chain(test_split.x[:16]):
        if j == k:                               # the runtime's stage k against an interpreter of the model itself
            from edgekit.runtime.interpreter import StageCall, load_backend

            call = StageCall(load_backend().interpreter(model_content=model, num_threads=1).get_signature_runner())
            want = call(**dict(zip(step.call.input_names, values)))[manifest.stages[k].exit.name]
            np.testing.assert_array_equal(res[step.carried], want)


@pytest.mark.parametrize("damage, message", [
    ("flip", r"unpacks to a model with sha256"),            # file changed, its sha256 in the manifest fixed
    ("flip-unfixed", r"stage file altered"),                 # file changed, manifest as it was
    ("regions", r"does not match its packed regions"),       # a region's length changed in the manifest
    ("version-1", r"schema_version 1 has no packed stage files"),
    ("overlap", r"after the region before it"),
])
def test_a_tampered_packed_bundle_is_refused_in_one_line(packed_bundle, test_split, damage, message):
    from edgekit.runtime import EarlyExitRunner

    bundle, k, _ = packed_bundle
    data = bytearray(read_stage(bundle, k))
    off, n = read_manifest(bundle).stages[k].packed.regions[0]
    if damage.startswith("flip"):
        data[off + 3] ^= 0x11                    # inside the packed filter: the stored bytes still parse
        write_stage(bundle, k, bytes(data), fix_sha=damage == "flip")
    else:
        def edit(d):
            p = d["stages"][k]["packed"]
            if damage == "regions":
                p["regions"][0][1] = n - 2
            elif damage == "version-1":
                d["schema_version"] = 1
            else:
                p["regions"].append([off, 64])
        edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=message) as err:
        EarlyExitRunner(bundle)
    assert "\n" not in str(err.value)


def test_an_edgekit_that_reads_schema_version_1_only_refuses_a_packed_bundle(packed_bundle):
    """What an older runtime does (it knows version 1 alone): one line on stderr, exit code 2, nothing loaded."""
    bundle, _, _ = packed_bundle
    code = ("import sys, edgekit.manifest as m; m.SCHEMA_VERSIONS = (1,); from edgekit.cli import main; "
            "main(['run', sys.argv[1], sys.argv[2]])")
    res = subprocess.run([sys.executable, "-c", code, bundle, TEST], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("edgekit:")]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(lines) == 1 and "unknown schema_version 2; this edgekit reads 1" in lines[0]
    assert "Traceback" not in res.stderr


def test_convert_default_adaptive_on_the_demo_stores_packed_filters(tmp_path, monkeypatch, capsys):
    """Every candidate timed alike (a fixed clock): the default plan is then decided by sensitivity alone."""
    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.precision import costs
    from edgekit.runtime.cost_protocol import Cost
    from edgekit.runtime.guard import load_checked
    from edgekit.cli.commands import packed_lines

    def same(cands, protocol=None):
        return {k: Cost(0.1, 0.1, 0.1, 0.0, 0.0, 100, True) for k in cands}
    monkeypatch.setattr(costs, "measure_candidates", same)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "precision-cache"))
    res = convert(ConvertOptions(DEMO, "raspberry-pi-4", CALIB, str(tmp_path / "out"), precision="adaptive"))
    plan = res.report["precision_plan"]
    packed = [s for s in res.manifest.stages if s.packed is not None]
    assert res.manifest.schema_version == 2 and packed
    convs4 = [ly for ly in plan["layers"] if ly["op"] == "CONV_2D" and ly["rung"] == "int4w"]
    assert sum(len(s.packed.regions) for s in packed) == len(convs4)
    assert all(ly["kernel"] == "xnnpack" and "nibble-packed" in ly["form"] for ly in convs4)
    manifest, blobs, _ = load_checked(res.bundle_dir)
    assert [len(b) for b, s in zip(blobs, manifest.stages) if s.packed] == [s.packed.size_bytes for s in packed]
    assert sum(s.size_bytes for s in packed) < sum(s.packed.size_bytes for s in packed)
    assert plan["verification"]["holds"]
    assert "on disk" in plan["summary"][0] and "in memory after load" in plan["summary"][0]
    assert len(packed_lines(res.bundle_dir, manifest)) == len(packed)
    from edgekit.cli.convert import _print

    _print(res, False)                           # what convert prints: size on disk and in memory
    first = capsys.readouterr().out.splitlines()[0]
    assert "on disk, 4-bit convolution weights nibble-packed" in first and "in memory after load" in first
