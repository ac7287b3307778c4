"""run() at batch 1 takes a shortcut (a Python-float exit decision, no bookkeeping when every sample leaves at
once); it must answer exactly what the batch path answers."""
import numpy as np

from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.policy import QUICK_MARGIN, max_softmax, max_softmax_decides, softmax


def test_max_softmax_is_the_largest_probability():
    z = np.random.default_rng(0).normal(size=(7, 10)).astype(np.float32) * 4
    np.testing.assert_allclose(max_softmax(z), softmax(z.astype(np.float64)).max(axis=-1), rtol=1e-6)
    assert max_softmax(z).dtype == np.float32
    ints = np.array([[3, 1, 0], [0, 0, 0]], dtype=np.int32)
    np.testing.assert_allclose(max_softmax(ints), softmax(ints.astype(np.float64)).max(axis=-1))
    np.testing.assert_allclose(max_softmax(z.reshape(7, 2, 5)), max_softmax(z))


def test_quick_decision_agrees_with_the_score_or_abstains():
    rng = np.random.default_rng(1)
    answered = 0
    for _ in range(3000):
        z = (rng.normal(size=(1, 10)) * rng.uniform(0.1, 6)).astype(np.float32)
        s = float(max_softmax(z)[0])
        for th in (rng.uniform(0, 1), s, s + QUICK_MARGIN / 2, s - 2 * QUICK_MARGIN, s + 2 * QUICK_MARGIN):
            got = max_softmax_decides(z, float(th))
            if got is not None:
                answered += 1
                assert got == bool((max_softmax(z) >= th)[0])
        assert max_softmax_decides(z, s) is None               # too close to call: numpy decides
    assert answered >= 8900                                   # abstains only near the score
    assert max_softmax_decides(np.array([[np.nan, 1.0]], np.float32), 0.1) is None
    assert max_softmax_decides(np.array([[np.inf, 1.0]], np.float32), 0.1) is None
    assert max_softmax_decides(np.zeros((1, 10), np.float16), 0.01) is None     # float16 rounds coarser
    assert max_softmax_decides(np.zeros((1, 1000), np.float32), 0.0001) is None
    assert max_softmax_decides(np.zeros((1, 10), np.float32), 0.01) is True


def test_batch_one_decides_like_the_batch_at_the_threshold(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    x = test_split.x[:40].astype(np.float32)
    first, _ = runner.invoke_stage(0, [runner.prepare(x[:1])], runner._steps[0].fetch)
    s = max_softmax(first[runner._steps[0].carried])[0]            # float32 score of sample 0 at exit 0
    for th in (float(s), np.nextafter(float(s), 2.0), np.nextafter(float(s), 0.0),
               float(np.nextafter(s, np.float32(2.0)))):
        ths = [th, 2.0]
        one = runner.run(x[:1], thresholds=ths)
        pair = runner.run(np.concatenate([x[:1], x[:1]]), thresholds=ths)
        assert int(one.exits[0]) == int(pair.exits[0]) == int(pair.exits[1])
        np.testing.assert_array_equal(one.outputs[0], pair.outputs[0])
    assert int(runner.run(x[:1], thresholds=[float(s), 2.0]).exits[0]) == 0      # score >= threshold exits


def test_batch_one_result_matches_the_batch_result(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    x = test_split.x[:60].astype(np.float32)
    batch = runner.run(x)
    for i in range(len(x)):
        one = runner.run(x[i:i + 1])
        assert one.exits.tolist() == [int(batch.exits[i])]
        assert one.scores.dtype == np.float64 and one.exits.dtype == np.int64
        np.testing.assert_array_equal(one.scores, batch.scores[i:i + 1])
        np.testing.assert_array_equal(one.outputs, batch.outputs[i:i + 1])
        assert one.predictions.tolist() == [int(batch.predictions[i])]
        assert len(one.stage_ms) == int(one.exits[0]) + 1
