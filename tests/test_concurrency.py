"""One EarlyExitRunner used from 4 threads at once gives bit-identical results to serial use."""
import threading

import numpy as np

from edgekit.runtime import EarlyExitRunner

THREADS = 4


def _spans(n, seed=0):
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n:
        size = int(rng.integers(1, 13))
        out.append((start, min(n, start + size)))
        start += size
    return out


def _call(runner, x, k):
    """Early exit, full depth and given thresholds alternate, so threads resize the interpreters differently."""
    kwargs = [{}, {"full_depth": True}, {"thresholds": [0.5, 0.7]}][k % 3]
    r = runner.run(x, **kwargs)
    return r.outputs.copy(), r.exits.copy(), r.scores.copy()


def test_four_threads_give_the_same_results_as_serial(demo_bundles, test_split):
    runner = EarlyExitRunner(demo_bundles("int8"))
    x = test_split.x[:240]
    spans = _spans(len(x))
    serial = [_call(runner, x[a:b], k) for k, (a, b) in enumerate(spans)]
    assert len({e for _, exits, _ in serial for e in exits.tolist()}) == 3      # every exit is taken somewhere
    results = [dict() for _ in range(THREADS)]
    errors = []
    barrier = threading.Barrier(THREADS)

    def work(t):
        order = np.random.default_rng(10 + t).permutation(len(spans))
        barrier.wait()
        try:
            for _ in range(2):
                for k in order:
                    a, b = spans[k]
                    results[t][int(k)] = _call(runner, x[a:b], int(k))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    for t in range(THREADS):
        assert sorted(results[t]) == list(range(len(spans)))
        for k, ref in enumerate(serial):
            for got, want in zip(results[t][k], ref):
                np.testing.assert_array_equal(got, want)
