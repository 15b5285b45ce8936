#!/usr/bin/env python3
"""JAX peer of sparsec: LeNet-300-100 / LeNet-5 SGD train steps, dense and Dropback.

Threads: the child process is pinned to T CPUs (os.sched_setaffinity, as `taskset`; XLA sizes
its CPU thread pools from the CPUs the process may run on) before jax is imported, and for T = 1
also XLA_FLAGS=--xla_cpu_multi_thread_eigen=false. The whole step (forward, backward, SGD,
Dropback) is one jax.jit with the parameters donated; compile_ms is the time of
`jit(...).lower(...).compile()`.

Dropback (docs/methods.md §1, faithful): after SGD, scores = |W - W0| over the concatenation of all
parameters (W0 = 0 for biases), then the exact global top-k, ties to the lower flat index (the
spec's rule, as sparsec), and every other entry back to W0. Two selections:
  --select bisect  (default) the k-th largest score found by bisection over the float bits:
                   scores are >= 0, so their int32 bit patterns order like the floats; 31 rounds
                   of "count(bits >= candidate) >= k" fix the k-th largest bit pattern T; keep
                   bits > T, and of bits == T the lowest indices up to k (a cumsum, taken only
                   when there is such a tie).
  --select top_k   jax.lax.top_k(scores, k) and a scatter of its indices.
--check runs a few steps with both and asserts that they keep the same set and that at most k
entries differ from W0 after every step.

    python jax_lenet.py                         # every configuration, one JSON line each
    python jax_lenet.py --model lenet5 --mode dropback --select top_k --batch 64 --threads 2
    python jax_lenet.py --check
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEER = "jax"


def make_selectors(k, jnp, lax):
    """The two exact global top-k selections: scores (f32[N], >= 0) -> keep mask (bool[N])."""

    def select_bisect(scores):
        bits = lax.bitcast_convert_type(scores, jnp.int32)  # scores >= 0: monotone in the float

        def body(i, t):
            cand = t | jnp.left_shift(jnp.int32(1), 30 - i)
            return jnp.where(jnp.sum(bits >= cand, dtype=jnp.int32) >= k, cand, t)

        t = lax.fori_loop(0, 31, body, jnp.int32(0))  # the k-th largest bit pattern
        ge = bits >= t

        def tie_break(_):
            gt = bits > t
            need = k - jnp.sum(gt, dtype=jnp.int32)
            eq = bits == t
            return gt | (eq & (jnp.cumsum(eq, dtype=jnp.int32) <= need))

        return lax.cond(jnp.sum(ge, dtype=jnp.int32) > k, tie_break, lambda _: ge, None)

    def select_top_k(scores):
        _, idx = lax.top_k(scores, k)
        return jnp.zeros(scores.shape, bool).at[idx].set(True)

    return {"bisect": select_bisect, "top_k": select_top_k}


def make_step(model, mode, select, k, shapes, jax, jnp, lax):
    sizes = [int(math.prod(s)) for s in shapes]

    def forward(ps, x):
        if model == "lenet300":
            w1, b1, w2, b2, w3, b3 = ps
            h = x.reshape(x.shape[0], -1)
            h = jax.nn.relu(h @ w1.T + b1)
            h = jax.nn.relu(h @ w2.T + b2)
            return h @ w3.T + b3
        c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b = ps

        def conv(h, w, b):
            y = lax.conv_general_dilated(h, w, (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return y + b[None, :, None, None]

        def pool(h):
            return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        h = pool(conv(x, c1w, c1b))
        h = pool(conv(h, c2w, c2b))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(h @ f1w.T + f1b)
        return h @ f2w.T + f2b

    def loss_fn(ps, x, y):
        logits = forward(ps, x)
        logz = jax.nn.logsumexp(logits, axis=1)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(logz - picked)

    def dropback(ps, flat0):
        flat = jnp.concatenate([p.ravel() for p in ps])
        scores = jnp.abs(flat - flat0)
        keep = make_selectors(k, jnp, lax)[select](scores)
        flat = jnp.where(keep, flat, flat0)
        out, off = [], 0
        for s, n in zip(shapes, sizes):
            out.append(flat[off:off + n].reshape(s))
            off += n
        return out

    def step(ps, flat0, x, y):
        loss, g = jax.value_and_grad(loss_fn)(ps, x, y)
        ps = [p - common.LR * gp for p, gp in zip(ps, g)]
        if mode == "dropback":
            ps = dropback(ps, flat0)
        return ps, loss

    return jax.jit(step, donate_argnums=(0,))


def setup(model, threads):
    common.limit_threads(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false").strip()
    import jax

    jax.config.update("jax_platforms", "cpu")
    return jax


def run_check(args):
    model, batch, threads = args.model[0], args.batch[0], args.threads[0]
    jax = setup(model, threads)
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    init = common.initial_params(model)
    shapes = [a.shape for a in init]
    k = common.dropback_k(model)
    flat0 = jnp.asarray(np.concatenate([a.ravel() for a in init]))
    steps = {s: make_step(model, "dropback", s, k, shapes, jax, jnp, lax)
             for s in ("bisect", "top_k")}
    ps = {s: [jnp.asarray(a) for a in init] for s in steps}
    # The selections alone on heavily tied scores (a few distinct values, many zeros) against
    # NumPy's stable sort: the exact top-k, ties to the lower index.
    rng = np.random.default_rng(3)
    n = int(flat0.size)
    trials = 5
    for trial in range(trials):
        if trial < 4:
            levels = np.array([0.0, 1e-3, 2e-3, 0.5], np.float32)[: 2 + trial % 3]
            scores = levels[rng.integers(0, len(levels), n)]
        else:  # fewer than k non-zero scores: the k-th largest is 0, tied n - k/2 times
            scores = np.zeros(n, np.float32)
            scores[rng.choice(n, k // 2, replace=False)] = rng.random(k // 2, np.float32) + 1e-3
        order = np.argsort(-scores, kind="stable")
        want = np.zeros(n, bool)
        want[order[:k]] = True
        for s, sel in make_selectors(k, jnp, lax).items():
            got = np.asarray(jax.jit(sel)(jnp.asarray(scores)))
            assert np.array_equal(got, want), f"{s} differs from the exact top-k on ties"
    common.emit(args, {"peer": PEER, "model": model, "check": "selection on ties",
                       "trials": trials, "ok": True})
    xs, ys = common.synthetic_data()
    for i in range(args.check_steps):
        j = i * batch
        x, y = jnp.asarray(xs[j:j + batch]), jnp.asarray(ys[j:j + batch].astype(np.int32))
        # The same start for both selections, so that the two can be compared step by step.
        start = [np.asarray(p) for p in ps["bisect"]]
        flats = {}
        for s, f in steps.items():
            new, loss = f([jnp.asarray(a) for a in start], flat0, x, y)
            ps[s] = new
            flats[s] = np.concatenate([np.asarray(p).ravel() for p in new])
        changed = int(np.sum(flats["bisect"] != np.asarray(flat0)))
        assert changed <= k, (changed, k)
        assert np.array_equal(flats["bisect"], flats["top_k"]), "bisect and top_k disagree"
        common.emit(args, {"peer": PEER, "model": model, "mode": "dropback", "check_step": i + 1,
                           "loss": float(loss), "changed_from_w0": changed, "k": k,
                           "bisect_equals_top_k": True, "ok": True})
    return 0


def run_single(args):
    model, mode, batch, threads = args.model[0], args.mode[0], args.batch[0], args.threads[0]
    select = args.select[0]
    jax = setup(model, threads)
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    init = common.initial_params(model)
    shapes = [a.shape for a in init]
    k = common.dropback_k(model)
    flat0 = jnp.asarray(np.concatenate([a.ravel() for a in init]))
    ps = [jnp.asarray(a) for a in init]
    batches = [(jnp.asarray(x), jnp.asarray(y.astype(np.int32)))
               for x, y in common.synthetic_batches(batch)]
    nb = len(batches)
    step_fn = make_step(model, mode, select, k, shapes, jax, jnp, lax)
    t0 = time.perf_counter()
    compiled = step_fn.lower(ps, flat0, *batches[0]).compile()
    compile_ms = (time.perf_counter() - t0) * 1e3

    state = {"ps": ps, "loss": None}

    def step(i):
        state["ps"], state["loss"] = compiled(state["ps"], flat0, *batches[i % nb])

    def block():
        jax.block_until_ready(state["ps"])

    steps, seconds, cpu, others, windows = common.measure(step, block, args)
    common.emit(args, {
        "peer": PEER, "model": model, "mode": mode, "batch": batch, "threads": threads,
        "samples_per_sec": steps * batch / seconds, "step_ms": seconds / steps * 1e3,
        "peak_rss_bytes": common.peak_rss_bytes(), "compile_ms": compile_ms,
        "steps": steps, "windows_samples_per_sec": [round(w * batch, 1) for w in windows],
        "cpu_util": cpu / seconds, "other_cpus": round(others, 3),
        "select": select if mode == "dropback" else None,
        "k": k if mode == "dropback" else None, "params": int(flat0.size),
        "version": jax.__version__,
    })
    return 0


def main():
    def extra(p):
        p.add_argument("--select", type=common.csv_list(str), default=["bisect"],
                       help="Dropback's top-k: bisect (default), top_k, or both: bisect,top_k")
        p.add_argument("--check-steps", type=int, default=5)

    args = common.parser(PEER, ["dense", "dropback"], extra).parse_args()
    if args.single:
        return run_check(args) if args.check else run_single(args)
    if args.check:
        args.mode = ["dropback"]
        args.select = ["bisect"]
        args.threads = args.threads[:1]
        args.batch = args.batch[2:3] or args.batch[:1]
        return common.fan_out(args, ["check-steps", "select"])
    # Each selection is a separate configuration; dense has no selection.
    rc = 0
    modes = args.mode
    if "dense" in modes:
        args.mode = ["dense"]
        sel = args.select
        args.select = ["bisect"]
        rc |= common.fan_out(args, ["check-steps", "select"])
        args.select = sel
    if "dropback" in modes:
        args.mode = ["dropback"]
        for s in args.select:
            sub = args.select
            args.select = [s]
            rc |= common.fan_out(args, ["check-steps", "select"])
            args.select = sub
    return rc


if __name__ == "__main__":
    sys.exit(main())
